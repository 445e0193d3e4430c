//! A service's revisions: what a change of its spec records (a new revision, the old one
//! into the history), and the writes of `capstan rollout undo|pause|resume|restart` and of
//! the controller's automatic rollback. Each commits through the stack record like a scale.

use capstan_api::object::{Revision, RevisionMeta, RolledBack, Service};
use capstan_api::spec::ServiceSpec;

use super::{check_ports, now_rfc3339, Store, StoreError};

/// How many earlier revisions a service keeps unless `serve --revision-history-limit` says
/// otherwise (a Deployment's `revisionHistoryLimit`).
pub const DEFAULT_HISTORY_LIMIT: usize = 10;

/// What `capstan rollout pause|resume|restart` asks of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutVerb {
    /// No outdated replica that still serves is replaced until `Resume`.
    Pause,
    Resume,
    /// Every replica anew with the same spec, as `update_config` says.
    Restart,
}

/// `prev` with `spec` as its desired spec, under the next generation. The same revision
/// when only `replicas` or a pause differ; else a new one, described by `change` (the
/// field diff when None), with `prev`'s going into the history. A history entry whose spec
/// is `spec`'s again is dropped (it is current now), and the history keeps `limit` entries.
pub(crate) fn successor(
    prev: &Service,
    spec: ServiceSpec,
    change: Option<String>,
    now: &str,
    limit: usize,
) -> Service {
    let mut next = Service {
        generation: prev.generation + 1,
        rolled_back: None,
        ..prev.clone()
    };
    if !prev.spec.same_revision(&spec) {
        let number = prev.revision.number.max(1);
        next.history.push(Revision {
            meta: RevisionMeta {
                number,
                ..prev.revision.clone()
            },
            generation: prev.generation,
            spec: Box::new(prev.spec.clone()),
        });
        next.history.retain(|r| !r.spec.same_revision(&spec));
        let excess = next.history.len().saturating_sub(limit);
        next.history.drain(..excess);
        next.revision = RevisionMeta {
            number: number + 1,
            at: now.to_string(),
            change: change.unwrap_or_else(|| {
                capstan_api::diff::summary(&capstan_api::diff::changes(&prev.spec, &spec))
            }),
        };
    }
    next.spec = spec;
    next
}

impl Store {
    /// The controller's automatic rollback: the previous revision's spec becomes the
    /// desired spec again, as a new revision that records the rollback. The replica count
    /// stays; the failed spec's `rollback_config` (if any) steers the rollback. Nothing is
    /// written (Ok(None)) when the service is no longer at `failed_generation`, was rolled
    /// back already, or has no previous revision.
    pub async fn roll_back(
        &self,
        stack: &str,
        service: &str,
        failed_generation: i64,
        message: &str,
    ) -> Result<Option<Service>, StoreError> {
        let (svc, written) = self
            .modify(stack, service, None, |prev| {
                let Some(to) = prev.previous() else {
                    return Ok(None);
                };
                if prev.generation != failed_generation || prev.rolled_back.is_some() {
                    return Ok(None);
                }
                let mut spec = self.restored(prev, to);
                if let Some(config) = prev.spec.rollback_config {
                    spec.update_config = Some(config);
                }
                let why = format!("automatic rollback to revision {}", to.meta.number);
                let mut next = self.back_to(prev, to, spec, why);
                next.rolled_back = Some(RolledBack {
                    from_generation: prev.generation,
                    to_generation: to.generation,
                    at: now_rfc3339(),
                    message: message.to_string(),
                });
                Ok(Some(next))
            })
            .await?;
        Ok(written.then_some(svc))
    }

    /// `capstan rollout undo [--to-revision N]`: revision N's spec (the previous one's
    /// without N) becomes the desired spec again, as a new revision; the replica count
    /// stays. Clears a recorded automatic rollback, since a person decided.
    pub async fn undo(
        &self,
        stack: &str,
        service: &str,
        to_revision: Option<i64>,
    ) -> Result<Service, StoreError> {
        let (svc, _) = self
            .modify(stack, service, None, |prev| {
                let to = match to_revision {
                    None => prev.previous().ok_or_else(|| {
                        StoreError::Conflict(format!(
                            "service {stack}/{service} has no previous revision to go back to"
                        ))
                    })?,
                    Some(n) if n == prev.revision.number.max(1) => return Ok(None),
                    Some(n) => prev
                        .history
                        .iter()
                        .find(|r| r.meta.number == n)
                        .ok_or_else(|| {
                            StoreError::NotFound(not_in_history(stack, service, n, prev))
                        })?,
                };
                let spec = self.restored(prev, to);
                check_ports(stack, service, &spec, Some(prev.spec.replicas))?;
                let why = format!("rollout undo to revision {}", to.meta.number);
                Ok(Some(self.back_to(prev, to, spec, why)))
            })
            .await?;
        Ok(svc)
    }

    /// `capstan rollout pause|resume|restart`. Pausing a paused service (or resuming a
    /// running one) writes nothing; a restart is a new revision.
    pub async fn rollout(
        &self,
        stack: &str,
        service: &str,
        verb: RolloutVerb,
    ) -> Result<Service, StoreError> {
        let (svc, _) = self
            .modify(stack, service, None, |prev| {
                let mut spec = prev.spec.clone();
                let now = now_rfc3339();
                match verb {
                    RolloutVerb::Pause | RolloutVerb::Resume => {
                        let paused = verb == RolloutVerb::Pause;
                        if spec.rollout.paused == paused {
                            return Ok(None);
                        }
                        spec.rollout.paused = paused;
                    }
                    RolloutVerb::Restart => spec.rollout.restarted_at = Some(now.clone()),
                }
                let change = Some("rollout restart".to_string());
                let mut next = successor(prev, spec, change, &now, self.history_limit);
                next.rolled_back = prev.rolled_back.clone();
                Ok(Some(next))
            })
            .await?;
        Ok(svc)
    }

    /// `to`'s spec with what stays across an undo or a rollback: the replica count and the
    /// rollout controls.
    fn restored(&self, prev: &Service, to: &Revision) -> ServiceSpec {
        ServiceSpec {
            replicas: prev.spec.replicas,
            rollout: prev.spec.rollout.clone(),
            ..(*to.spec).clone()
        }
    }

    /// The successor that returns to `to`: a new revision whose history no longer lists
    /// `to` (it is current again).
    fn back_to(&self, prev: &Service, to: &Revision, spec: ServiceSpec, why: String) -> Service {
        let mut next = successor(prev, spec, Some(why), &now_rfc3339(), self.history_limit);
        next.history.retain(|r| r.meta.number != to.meta.number);
        next
    }
}

fn not_in_history(stack: &str, service: &str, n: i64, svc: &Service) -> String {
    let known: Vec<String> = capstan_api::object::RevisionView::list(svc)
        .iter()
        .map(|r| r.revision.to_string())
        .collect();
    format!(
        "revision {n} of {stack}/{service} is not in its history (it has {}); \
         `capstan rollout history {stack}/{service}` lists them",
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(image: &str) -> Service {
        Service {
            stack: "shop".into(),
            name: "web".into(),
            generation: 1,
            revision: RevisionMeta {
                number: 1,
                at: "t0".into(),
                change: "created".into(),
            },
            spec: ServiceSpec {
                image: image.into(),
                replicas: 2,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn with_image(svc: &Service, image: &str) -> ServiceSpec {
        ServiceSpec {
            image: image.into(),
            ..svc.spec.clone()
        }
    }

    #[test]
    fn a_changed_image_is_a_new_revision_and_the_old_one_goes_into_the_history() {
        let v1 = service("web:1");
        let v2 = successor(&v1, with_image(&v1, "web:2"), None, "t1", 10);
        assert_eq!((v2.generation, v2.revision.number), (2, 2));
        assert_eq!(v2.revision.change, "image: web:1 → web:2");
        assert_eq!(v2.history.len(), 1);
        assert_eq!(v2.history[0].meta.number, 1);
        assert_eq!(v2.history[0].spec.image, "web:1");
    }

    #[test]
    fn a_scale_or_a_pause_keeps_the_revision_and_the_history() {
        let v1 = service("web:1");
        let mut spec = v1.spec.clone();
        spec.replicas = 5;
        spec.rollout.paused = true;
        let next = successor(&v1, spec, None, "t1", 10);
        assert_eq!((next.generation, next.revision.number), (2, 1));
        assert!(next.history.is_empty());
    }

    #[test]
    fn the_history_keeps_the_limit_and_drops_a_spec_that_is_current_again() {
        let mut svc = service("web:0");
        for i in 1..=5 {
            svc = successor(&svc, with_image(&svc, &format!("web:{i}")), None, "t", 3);
        }
        let numbers: Vec<i64> = svc.history.iter().map(|r| r.meta.number).collect();
        assert_eq!(numbers, [3, 4, 5]);
        assert_eq!(svc.revision.number, 6);
        let back = successor(&svc, with_image(&svc, "web:3"), None, "t", 3);
        let images: Vec<&str> = back.history.iter().map(|r| r.spec.image.as_str()).collect();
        assert_eq!(
            images,
            ["web:2", "web:4", "web:5"],
            "web:3 is current again"
        );
    }
}
