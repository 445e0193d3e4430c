//! How far a service is from its spec, counted in replicas, by kind. Pure; the metrics only
//! record what this computes.

use capstan_api::object::Service;
use std::collections::BTreeSet;

use crate::runtime::{Health, Observed};

/// The kinds of drift, in the order the dashboard shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftKind {
    Missing,
    Surplus,
    Unhealthy,
    Outdated,
    ChangedOutside,
}

impl DriftKind {
    pub const ALL: [DriftKind; 5] = [
        DriftKind::Missing,
        DriftKind::Surplus,
        DriftKind::Unhealthy,
        DriftKind::Outdated,
        DriftKind::ChangedOutside,
    ];

    /// The `kind` label of `capstan_service_drift_replicas`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Surplus => "surplus",
            DriftKind::Unhealthy => "unhealthy",
            DriftKind::Outdated => "outdated",
            DriftKind::ChangedOutside => "changed_outside",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    pub missing: u32,
    pub surplus: u32,
    pub unhealthy: u32,
    pub outdated: u32,
    /// Replicas found removed or altered behind capstan's back in the last reconcile.
    pub changed_outside: u32,
}

impl Drift {
    /// The drift of `service` as `observed`; `changed_outside` is what the reconcile found.
    pub fn of(service: &Service, observed: &[Observed], changed_outside: u32) -> Drift {
        let spec = &service.spec;
        let hash = spec.container_hash();
        let current: Vec<&Observed> = observed
            .iter()
            .filter(|c| spec.is_current(c.ordinal))
            .collect();
        let present: BTreeSet<u32> = current.iter().filter_map(|c| c.ordinal).collect();
        Drift {
            missing: spec.replicas - present.len() as u32,
            surplus: (observed.len() - current.len()) as u32,
            unhealthy: current
                .iter()
                .filter(|c| c.health == Health::Unhealthy)
                .count() as u32,
            outdated: current.iter().filter(|c| c.spec_hash != hash).count() as u32,
            changed_outside,
        }
    }

    pub fn get(&self, kind: DriftKind) -> u32 {
        match kind {
            DriftKind::Missing => self.missing,
            DriftKind::Surplus => self.surplus,
            DriftKind::Unhealthy => self.unhealthy,
            DriftKind::Outdated => self.outdated,
            DriftKind::ChangedOutside => self.changed_outside,
        }
    }
}
