//! The desired state in etcd: typed keys, apply committed by one compare-and-swap of the
//! stack record whatever the stack's size, and status writes guarded by the spec they were
//! computed for.
//!
//! Keys (under `<prefix>/v1/`): `stacks/<stack>` (the record: the stack's own part and the
//! committed version of each service), `services/<stack>/<service>/<token>` (one immutable
//! key per version of a service's spec; see [`layout`]), `status/<stack>/<service>`,
//! `endpoints/<stack>/<service>`.

mod apply;
pub mod etcd;
pub mod fence;
pub mod files;
pub mod kv;
pub mod layout;
#[cfg(test)]
mod layout_tests;
pub mod lease;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod revisions;
mod tokens;

pub use revisions::{RolloutVerb, DEFAULT_HISTORY_LIMIT};

use capstan_api::object::*;
use capstan_api::spec::StackSpec;
use capstan_api::InvalidStack;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use kv::{Compare, KeyValue, Kv, KvError, Op, WatchEvent};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Invalid(#[from] InvalidStack),
    #[error("{0}")]
    NotFound(String),
    /// A concurrent writer won, or the stack is being deleted.
    #[error("{0}")]
    Conflict(String),
    /// The caller named a resourceVersion that is no longer current. Terminal: read again.
    #[error("{what} is at resourceVersion {current}, not {named}: it changed since you read it; read it again and retry")]
    Stale {
        what: String,
        current: i64,
        named: i64,
    },
    /// A stack record names a service version that is not stored: a bug or a foreign writer.
    #[error("stack {stack} commits version {token} of service {service}, which is not stored")]
    Dangling {
        stack: String,
        service: String,
        token: String,
    },
    /// A stack kept being committed and collected between the two reads of one view.
    /// Retryable.
    #[error("stack {0} kept changing while it was read; try again")]
    ReadRaced(String),
    /// A status write kept losing to commits of other services of its stack. Retryable.
    #[error("the status of {0} kept racing changes to its stack; will try again")]
    StatusRaced(String),
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A stored value did not decode: a bug or a foreign writer under our prefix.
    #[error("stored value at {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// A sealed secret value that this daemon's keys cannot open.
    #[error("cannot decrypt the secret value at {key}: {source}")]
    Unsealed {
        key: String,
        source: crate::seal::SealError,
    },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Kv(KvError::Unavailable(_))
                | StoreError::ReadRaced(_)
                | StoreError::StatusRaced(_)
        )
    }
}

/// What a key under the prefix names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Stack(String),
    /// `services/<stack>/<service>/<token>`: one version of a service's spec.
    ServiceVersion(String, String, String),
    Status(String, String),
    Endpoints(String, String),
}

/// Typed access to capstan's keys.
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
    /// `<prefix>/v1/`, so two installations can share one etcd.
    root: String,
    /// How many earlier revisions each service keeps (`serve --revision-history-limit`).
    history_limit: usize,
    /// Seals secret values at rest ([`Store::with_sealer`]); without it they are stored clear.
    sealer: Option<Arc<crate::seal::Sealer>>,
}

/// Everything under the prefix at one revision, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub stacks: Vec<Stack>,
    pub services: Vec<Service>,
    pub statuses: Vec<(String, String, ServiceStatus)>,
    pub endpoints: Vec<Endpoints>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("capstan objects always serialise")
}

use apply::APPLY_ATTEMPTS;

/// A stack as stored now: its record, the services it commits, and every other version key of
/// the stack (staged by an apply in flight, or left by one that failed), with its revision.
#[derive(Default)]
pub(crate) struct Current {
    record: Option<Stack>,
    services: Vec<Service>,
    loose: Vec<(String, i64)>,
}

impl Current {
    /// The record's revision; 0 when there is none.
    fn revision(&self) -> i64 {
        self.record.as_ref().map_or(0, |r| r.resource_version)
    }
}

impl Store {
    pub fn new(kv: Arc<dyn Kv>, prefix: &str) -> Self {
        Store {
            kv,
            root: format!("{}/v1/", prefix.trim_end_matches('/')),
            history_limit: DEFAULT_HISTORY_LIMIT,
            sealer: None,
        }
    }

    /// The same store, keeping `limit` earlier revisions of each service.
    pub fn with_history_limit(self, limit: usize) -> Store {
        Store {
            history_limit: limit,
            ..self
        }
    }

    /// The same store, whose writes carry `fence` ([`fence::FencedKv`]): the reconciler's.
    pub fn fenced(&self, fence: Arc<dyn fence::Fence>) -> Store {
        Store {
            kv: Arc::new(fence::FencedKv {
                inner: self.kv.clone(),
                leader_key: self.leader_key(),
                fence,
            }),
            root: self.root.clone(),
            history_limit: self.history_limit,
            sealer: self.sealer.clone(),
        }
    }

    /// The prefix every capstan key starts with.
    pub fn root(&self) -> &str {
        &self.root
    }

    fn stack_key(&self, stack: &str) -> String {
        format!("{}stacks/{stack}", self.root)
    }
    fn services_prefix(&self, stack: &str) -> String {
        format!("{}services/{stack}/", self.root)
    }
    fn version_key(&self, stack: &str, svc: &str, token: &str) -> String {
        format!("{}services/{stack}/{svc}/{token}", self.root)
    }
    fn status_prefix(&self, stack: &str) -> String {
        format!("{}status/{stack}/", self.root)
    }
    fn status_key(&self, stack: &str, svc: &str) -> String {
        format!("{}status/{stack}/{svc}", self.root)
    }
    fn endpoints_prefix(&self, stack: &str) -> String {
        format!("{}endpoints/{stack}/", self.root)
    }
    pub fn endpoints_key(&self, stack: &str, svc: &str) -> String {
        format!("{}endpoints/{stack}/{svc}", self.root)
    }

    /// What `key` names, if it is one of ours.
    pub fn classify(&self, key: &str) -> Option<KeyKind> {
        let rest = key.strip_prefix(&self.root)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["stacks", s] => Some(KeyKind::Stack(s.to_string())),
            ["services", s, v, t] => Some(KeyKind::ServiceVersion(
                s.to_string(),
                v.to_string(),
                t.to_string(),
            )),
            ["status", s, v] => Some(KeyKind::Status(s.to_string(), v.to_string())),
            ["endpoints", s, v] => Some(KeyKind::Endpoints(s.to_string(), v.to_string())),
            _ => None,
        }
    }

    pub fn decode_stack(kv: &KeyValue) -> Result<Stack, StoreError> {
        let mut s: Stack = decode(kv)?;
        s.resource_version = kv.mod_revision;
        Ok(s)
    }

    pub fn decode_service(kv: &KeyValue) -> Result<Service, StoreError> {
        let mut s: Service = decode(kv)?;
        s.resource_version = kv.mod_revision;
        s.version = kv.key.rsplit('/').next().unwrap_or_default().to_string();
        Ok(s)
    }

    pub fn decode_status(kv: &KeyValue) -> Result<ServiceStatus, StoreError> {
        decode(kv)
    }

    /// Every change under the prefix from `from_revision` on, in batches, as etcd reports
    /// them; the watcher decodes each key with [`Store::classify`] and the `decode_*`s.
    pub async fn watch(
        &self,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Vec<WatchEvent>, KvError>>, StoreError> {
        Ok(self.kv.watch(&self.root, from_revision).await?)
    }

    /// Everything, at one revision: the reflector's initial list.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(self.resolved_snapshot().await?.1)
    }

    /// Everything at one revision, and the [`layout::Resolver`] that follows it: the
    /// watcher's list.
    pub async fn resolved_snapshot(&self) -> Result<(layout::Resolver, Snapshot), StoreError> {
        let listing = self.kv.range(&self.root).await?;
        layout::Resolver::from_listing(self, &listing.items, listing.revision)
    }

    /// A stack's record and its committed services. The record is read first and the
    /// versions second; if a newer commit collected a version the record named in between,
    /// both are read again.
    pub(crate) async fn read_stack(&self, stack: &str) -> Result<Current, StoreError> {
        for _ in 0..APPLY_ATTEMPTS {
            let record = match self.kv.get(&self.stack_key(stack)).await? {
                Some(kv) => Some(Self::decode_stack(&kv)?),
                None => None,
            };
            let listing = self.kv.range(&self.services_prefix(stack)).await?;
            if let Some(current) = self.resolve(record, &listing.items)? {
                return Ok(current);
            }
        }
        Err(StoreError::ReadRaced(stack.to_string()))
    }

    /// `record` with the versions it names out of `items`; None when one is missing.
    fn resolve(
        &self,
        record: Option<Stack>,
        items: &[KeyValue],
    ) -> Result<Option<Current>, StoreError> {
        let mut current = Current::default();
        let empty = BTreeMap::new();
        let named = record.as_ref().map_or(&empty, |r| &r.versions);
        for kv in items {
            match self.classify(&kv.key) {
                Some(KeyKind::ServiceVersion(_, svc, token)) if named.get(&svc) == Some(&token) => {
                    current.services.push(Self::decode_service(kv)?)
                }
                Some(KeyKind::ServiceVersion(..)) => {
                    current.loose.push((kv.key.clone(), kv.mod_revision))
                }
                _ => {}
            }
        }
        if current.services.len() != named.len() {
            return Ok(None);
        }
        current.record = record;
        Ok(Some(current))
    }

    /// One committed service, read from etcd.
    pub async fn service(&self, stack: &str, name: &str) -> Result<Option<Service>, StoreError> {
        let current = self.read_stack(stack).await?;
        Ok(current.services.into_iter().find(|s| s.name == name))
    }

    /// The revision a write committed at: `rev`, or when the [`Kv`] could not tell (0), the
    /// record's revision if it still holds what was written.
    async fn committed_at(&self, rev: i64, key: &str, written: &Op) -> Result<i64, StoreError> {
        if rev != 0 {
            return Ok(rev);
        }
        let now = self.kv.get(key).await?;
        match (now, written) {
            (Some(kv), Op::Put(_, value)) if kv.value == *value => Ok(kv.mod_revision),
            (now, _) => {
                tracing::warn!(%key, "the store cannot tell the revision of a write; reporting the latest");
                Ok(now.map_or(0, |kv| kv.mod_revision))
            }
        }
    }
    /// Sets one service's replica count (a declarative change of one field), committed
    /// through the stack record like an apply. With `expected`, the service's resourceVersion
    /// must still be that (409 otherwise, with nothing changed).
    pub async fn scale(
        &self,
        stack: &str,
        service: &str,
        replicas: u32,
        expected: Option<i64>,
    ) -> Result<Service, StoreError> {
        let (svc, _) = self
            .modify(stack, service, expected, |prev| {
                if let Some(lead) = prev.spec.lead_partner() {
                    return Err(StoreError::Invalid(InvalidStack {
                        errors: vec![capstan_api::FieldError {
                            field: format!("services.{service}.replicas"),
                            reason: format!("{service} is a sidecar of {0}: it runs one replica per replica of {0}; scale {0} instead", lead.service),
                        }],
                    }));
                }
                let mut spec = prev.spec.clone();
                spec.replicas = replicas;
                check_ports(stack, service, &spec, Some(prev.spec.replicas))?;
                if prev.spec.replicas == replicas {
                    return Ok(None);
                }
                let now = now_rfc3339();
                Ok(Some(revisions::successor(
                    prev,
                    spec,
                    None,
                    &now,
                    self.history_limit,
                )))
            })
            .await?;
        Ok(svc)
    }

    /// One service changed by `change` (given the committed one; None: nothing to write),
    /// committed through the stack record as a new version, and tried again ([`apply::Retry`])
    /// when another writer committed first; with `expected`, that is a conflict instead. Returns the
    /// service as committed, and whether this call wrote it.
    async fn modify(
        &self,
        stack: &str,
        service: &str,
        expected: Option<i64>,
        change: impl Fn(&Service) -> Result<Option<Service>, StoreError>,
    ) -> Result<(Service, bool), StoreError> {
        let mut retry = apply::Retry::new(expected);
        loop {
            let current = match self.read_stack(stack).await {
                Err(e @ StoreError::ReadRaced(_)) => match retry.lost().await {
                    true => continue,
                    false => return Err(e),
                },
                read => read?,
            };
            let (record, prev) = scale_target(stack, service, &current, expected)?;
            let Some(next) = change(prev)? else {
                return Ok((prev.clone(), false));
            };
            check_stateful(record, prev, &next)?;
            let next = Service {
                version: layout::new_token(),
                ..next
            };
            if let Some(committed) = self.commit_version(&current, record, prev, next).await? {
                return Ok((committed, true));
            }
            if retry.lost().await {
                continue;
            }
            if expected.is_some() {
                return Err(StoreError::Conflict(format!(
                    "stack {stack} changed while {service} was being changed; read it again and retry"
                )));
            }
            return Err(StoreError::Conflict(format!(
                "service {stack}/{service} kept changing under concurrent writers; try again"
            )));
        }
    }

    /// Swaps `prev` for `next` in the stack record, guarded by the record's revision;
    /// None when another writer changed the stack first.
    async fn commit_version(
        &self,
        current: &Current,
        record: &Stack,
        prev: &Service,
        next: Service,
    ) -> Result<Option<Service>, StoreError> {
        let (stack, service) = (prev.stack.as_str(), prev.name.as_str());
        let mut record = record.clone();
        record.versions.insert(service.into(), next.version.clone());
        let stack_key = self.stack_key(stack);
        let commit = Op::Put(stack_key.clone(), encode(&record));
        let ops = vec![
            Op::Put(
                self.version_key(stack, service, &next.version),
                encode(&next),
            ),
            Op::Delete(self.version_key(stack, service, &prev.version)),
            commit.clone(),
        ];
        let guard = vec![Compare::ModRevision(stack_key.clone(), current.revision())];
        if let Some(rev) = self.kv.txn_at(guard, ops).await? {
            let rev = self.committed_at(rev, &stack_key, &commit).await?;
            if !current.loose.is_empty() {
                self.sweep(&record, rev, &[]).await;
            }
            return Ok(Some(Service {
                resource_version: rev,
                ..next
            }));
        }
        Ok(None)
    }

    /// Records the deletion of a stack; returns the record's new resourceVersion. The
    /// controller tears it down and then removes its keys. With `expected`, the stack's
    /// resourceVersion must still be that (409 otherwise).
    pub async fn request_deletion(
        &self,
        stack: &str,
        volumes: bool,
        expected: Option<i64>,
    ) -> Result<i64, StoreError> {
        let key = self.stack_key(stack);
        for _ in 0..APPLY_ATTEMPTS {
            let kv = self
                .kv
                .get(&key)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("stack {stack} not found")))?;
            check_expected(&format!("stack {stack}"), kv.mod_revision, expected)?;
            let mut st = Self::decode_stack(&kv)?;
            if st.deletion.as_ref().is_some_and(|d| d.volumes || !volumes) {
                return Ok(kv.mod_revision);
            }
            st.deletion = Some(Deletion {
                requested_at: now_rfc3339(),
                volumes,
            });
            let put = Op::Put(key.clone(), encode(&st));
            let guard = vec![Compare::ModRevision(key.clone(), kv.mod_revision)];
            if let Some(rev) = self.kv.txn_at(guard, vec![put.clone()]).await? {
                return self.committed_at(rev, &key, &put).await;
            }
        }
        Err(StoreError::Conflict(format!(
            "stack {stack} kept changing; try again"
        )))
    }

    /// Removes every key of a torn-down stack, if its record is still the one that was torn down.
    pub async fn finalize_deletion(&self, stack: &Stack) -> Result<bool, StoreError> {
        let ops = vec![
            Op::Delete(self.stack_key(&stack.name)),
            Op::DeletePrefix(self.services_prefix(&stack.name)),
            Op::DeletePrefix(self.status_prefix(&stack.name)),
            Op::DeletePrefix(self.endpoints_prefix(&stack.name)),
            Op::DeletePrefix(self.files_prefix(&stack.name)),
        ];
        Ok(self
            .kv
            .txn(
                vec![Compare::ModRevision(
                    self.stack_key(&stack.name),
                    stack.resource_version,
                )],
                ops,
            )
            .await?)
    }

    /// Writes a status computed for `service` at its version. If the service's spec changed
    /// meanwhile (its stack record commits another version of it, or none) the write is
    /// skipped (Ok(false)): that status is already stale. The write is guarded by the record
    /// it was checked against.
    pub async fn write_status(
        &self,
        service: &Service,
        status: &ServiceStatus,
    ) -> Result<bool, StoreError> {
        let key = self.stack_key(&service.stack);
        for _ in 0..APPLY_ATTEMPTS {
            let Some(kv) = self.kv.get(&key).await? else {
                return Ok(false);
            };
            let record = Self::decode_stack(&kv)?;
            if record.versions.get(&service.name) != Some(&service.version) {
                return Ok(false);
            }
            let put = Op::Put(
                self.status_key(&service.stack, &service.name),
                encode(status),
            );
            let guard = vec![Compare::ModRevision(key.clone(), kv.mod_revision)];
            if self.kv.txn(guard, vec![put]).await? {
                return Ok(true);
            }
        }
        Err(StoreError::StatusRaced(format!(
            "{}/{}",
            service.stack, service.name
        )))
    }

    pub fn decode_endpoints(kv: &KeyValue) -> Result<Endpoints, StoreError> {
        decode(kv)
    }

    /// Writes a service's endpoints (the caller writes only when they changed).
    pub async fn write_endpoints(&self, endpoints: &Endpoints) -> Result<(), StoreError> {
        let key = self.endpoints_key(&endpoints.stack, &endpoints.service);
        self.kv
            .txn(vec![], vec![Op::Put(key, encode(endpoints))])
            .await?;
        Ok(())
    }

    /// Removes the endpoints of a service that no longer exists.
    pub async fn delete_endpoints(&self, stack: &str, service: &str) -> Result<(), StoreError> {
        self.kv
            .txn(vec![], vec![Op::Delete(self.endpoints_key(stack, service))])
            .await?;
        Ok(())
    }

    /// The keys under `prefix` (outside capstan's own, e.g. Traefik's KV layout) become
    /// exactly `puts`, in one transaction: stale keys are deleted and the rest written
    /// together, so a reader never sees a gap or a stale entry. (etcd refuses a delete-range
    /// and a put of the same key in one transaction.)
    pub async fn replace_subtree(
        &self,
        prefix: &str,
        puts: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        let existing = self.kv.range(prefix).await?;
        let mut ops: Vec<Op> = existing
            .items
            .into_iter()
            .filter(|kv| !puts.iter().any(|(k, _)| *k == kv.key))
            .map(|kv| Op::Delete(kv.key))
            .collect();
        ops.extend(puts.into_iter().map(|(k, v)| Op::Put(k, v.into_bytes())));
        self.kv.txn(vec![], ops).await?;
        Ok(())
    }

    /// Removes the status of a service that no longer exists.
    pub async fn delete_status(&self, stack: &str, service: &str) -> Result<(), StoreError> {
        self.kv
            .txn(vec![], vec![Op::Delete(self.status_key(stack, service))])
            .await?;
        Ok(())
    }

    /// One stack with its services and their status, read from etcd.
    pub async fn stack_view(&self, stack: &str) -> Result<Option<StackView>, StoreError> {
        let current = self.read_stack(stack).await?;
        let (Some(st), services) = (current.record, current.services) else {
            return Ok(None);
        };
        let statuses = self.statuses(stack).await?;
        Ok(Some(view_of(st, services, &statuses)))
    }

    async fn statuses(
        &self,
        stack: &str,
    ) -> Result<BTreeMap<(String, String), ServiceStatus>, StoreError> {
        let prefix = if stack.is_empty() {
            format!("{}status/", self.root)
        } else {
            self.status_prefix(stack)
        };
        let mut out = BTreeMap::new();
        for kv in self.kv.range(&prefix).await?.items {
            if let Some(KeyKind::Status(s, v)) = self.classify(&kv.key) {
                out.insert((s, v), Self::decode_status(&kv)?);
            }
        }
        Ok(out)
    }

    /// Every stack, read from etcd at one revision.
    pub async fn stack_views(&self) -> Result<Vec<StackView>, StoreError> {
        Ok(views_of(self.snapshot().await?))
    }
}

/// Every stack of `snap` with its services and their status, by name: what the API shows,
/// from etcd or from the daemon's copy ([`crate::watch::Desired::copy`]).
pub fn views_of(snap: Snapshot) -> Vec<StackView> {
    let statuses: BTreeMap<(String, String), ServiceStatus> = snap
        .statuses
        .into_iter()
        .map(|(s, v, st)| ((s, v), st))
        .collect();
    let mut by_stack: BTreeMap<String, Vec<Service>> = BTreeMap::new();
    for svc in snap.services {
        by_stack.entry(svc.stack.clone()).or_default().push(svc);
    }
    let mut out: Vec<StackView> = snap
        .stacks
        .into_iter()
        .map(|st| {
            let services = by_stack.remove(&st.name).unwrap_or_default();
            view_of(st, services, &statuses)
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn view_of(
    st: Stack,
    services: Vec<Service>,
    statuses: &BTreeMap<(String, String), ServiceStatus>,
) -> StackView {
    let replicas_of = |name: &str| {
        services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.spec.replicas)
    };
    let mut views: Vec<ServiceView> = services
        .iter()
        .map(|s| {
            let mut view = ServiceView::new(s, statuses.get(&(s.stack.clone(), s.name.clone())));
            view.replicas = s.spec.desired_replicas(replicas_of);
            view
        })
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    StackView {
        name: st.name.clone(),
        generation: st.generation,
        resource_version: st.resource_version,
        created_at: st.created_at.clone(),
        phase: if st.deletion.is_some() {
            "Deleting".into()
        } else {
            "Active".into()
        },
        services: views,
        deletion_blocked_by: None,
        networks: st.networks,
        volumes: st.volumes,
        stale: Stale::default(),
    }
}

/// Whether an apply may go ahead: the stack is at the version the caller read (if it named
/// one), and not being deleted.
fn check_applicable(
    spec: &StackSpec,
    current: &Current,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    check_expected(
        &format!("stack {}", spec.name),
        current.revision(),
        expected,
    )?;
    if current
        .record
        .as_ref()
        .is_some_and(|st| st.deletion.is_some())
    {
        return Err(StoreError::Conflict(format!(
            "stack {} is being deleted; apply again once it is gone",
            spec.name
        )));
    }
    check_rescaled_ports(spec, current)
}

/// A 409 when the caller named a version other than `current`.
fn check_expected(what: &str, current: i64, expected: Option<i64>) -> Result<(), StoreError> {
    match expected {
        Some(named) if named != current => Err(StoreError::Stale {
            what: what.to_string(),
            current,
            named,
        }),
        _ => Ok(()),
    }
}

/// The record and the service a scale changes, if it may.
fn scale_target<'a>(
    stack: &str,
    service: &str,
    current: &'a Current,
    expected: Option<i64>,
) -> Result<(&'a Stack, &'a Service), StoreError> {
    let record = (current.record.as_ref())
        .ok_or_else(|| StoreError::NotFound(format!("stack {stack} not found")))?;
    if record.deletion.is_some() {
        return Err(StoreError::Conflict(format!(
            "stack {stack} is being deleted"
        )));
    }
    let prev = (current.services.iter())
        .find(|s| s.name == service)
        .ok_or_else(|| {
            StoreError::NotFound(format!("service {service} not found in stack {stack}"))
        })?;
    let what = format!("service {stack}/{service}");
    check_expected(&what, prev.resource_version, expected)?;
    Ok((record, prev))
}

/// The rules a scale must keep: as many host ports as replicas, a port that stays with
/// the engine or the proxy (coming from `previous` replicas), and one replica for a service
/// with a `container_name` or a fixed address.
fn check_ports(
    stack: &str,
    service: &str,
    spec: &capstan_api::spec::ServiceSpec,
    previous: Option<u32>,
) -> Result<(), StoreError> {
    let field = |(field, reason): (String, String)| capstan_api::FieldError {
        field: format!("services.{service}.{field}"),
        reason,
    };
    let mut errors: Vec<capstan_api::FieldError> =
        (spec.single_replica_problems().into_iter().map(field)).collect();
    if errors.is_empty() {
        let ports = spec.port_problems(&format!("{stack}/{service}"), previous);
        errors.extend(ports.into_iter().map(field));
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(StoreError::Invalid(InvalidStack { errors })),
    }
}

/// An apply that changes a service's replica count keeps the rule a scale keeps for its
/// ports (the rest of the count's rules need no stored state and were checked already).
fn check_rescaled_ports(spec: &StackSpec, current: &Current) -> Result<(), StoreError> {
    let mut errors = vec![];
    for prev in &current.services {
        let Some(next) = spec.services.get(&prev.name) else {
            continue;
        };
        if next.replicas == prev.spec.replicas {
            continue;
        }
        let label = format!("{}/{}", spec.name, prev.name);
        let problems = next.port_problems(&label, Some(prev.spec.replicas));
        errors.extend(
            problems
                .into_iter()
                .map(|(field, reason)| capstan_api::FieldError {
                    field: format!("services.{}.{field}", prev.name),
                    reason,
                }),
        );
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(StoreError::Invalid(InvalidStack { errors })),
    }
}

/// The stateful guard, the same rule apply keeps (`capstan_api::stateful`): checked when a
/// change (scale, undo) alters the replica count or the mounts, so a stack stored before the
/// guard existed can still be restarted.
fn check_stateful(record: &Stack, prev: &Service, next: &Service) -> Result<(), StoreError> {
    let (before, after) = (&prev.spec, &next.spec);
    if before.replicas == after.replicas && before.volumes == after.volumes {
        return Ok(());
    }
    let errors: Vec<capstan_api::FieldError> =
        capstan_api::stateful::replica_problems(&next.name, after, &record.volumes)
            .into_iter()
            .map(|(field, reason)| capstan_api::FieldError {
                field: format!("services.{}.{field}", next.name),
                reason,
            })
            .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(StoreError::Invalid(InvalidStack { errors }))
}

#[cfg(test)]
mod tests {
    use super::memory::MemKv;
    use super::*;
    use capstan_api::parse_stack;

    fn store() -> (Store, Arc<MemKv>) {
        let kv = Arc::new(MemKv::default());
        (Store::new(kv.clone(), "/capstan"), kv)
    }

    const WEB: &str = "services: {web: {image: web:1, deploy: {replicas: 3}}, db: {image: db:1}}";

    #[tokio::test]
    async fn a_first_apply_creates_every_service_at_generation_one() {
        let (store, _) = store();
        let res = store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(res.services["web"], ApplyOutcome::Created);
        let view = store.stack_view("shop").await.unwrap().unwrap();
        assert_eq!(view.services.len(), 2);
        assert!(view.services.iter().all(|s| s.generation == 1));
    }

    #[tokio::test]
    async fn a_dry_run_reports_every_outcome_and_writes_nothing() {
        let (store, kv) = store();
        let res = store
            .dry_run(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        assert!(res.dry_run);
        assert_eq!(res.services["web"], ApplyOutcome::Created);
        assert_eq!(kv.writes(), 0);
        assert!(store.stack_view("shop").await.unwrap().is_none());
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        let writes = kv.writes();
        let next = "services: {web: {image: web:2, deploy: {replicas: 3}}, cache: {image: c:1}}";
        let res = store
            .dry_run(&parse_stack("shop", next).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(kv.writes(), writes, "a dry run writes nothing");
        assert_eq!(res.services["web"], ApplyOutcome::Configured);
        assert_eq!(res.services["cache"], ApplyOutcome::Created);
        assert_eq!(res.services["db"], ApplyOutcome::Removed);
        let same = store
            .dry_run(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        assert!(same
            .services
            .values()
            .all(|o| *o == ApplyOutcome::Unchanged));
        assert!(
            store
                .dry_run(&parse_stack("shop", WEB).unwrap(), Some(999))
                .await
                .is_err(),
            "a stale resourceVersion fails a dry run too"
        );
    }

    #[tokio::test]
    async fn an_identical_apply_writes_nothing() {
        let (store, kv) = store();
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        let writes = kv.writes();
        let res = store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(kv.writes(), writes);
        assert!(res.services.values().all(|o| *o == ApplyOutcome::Unchanged));
    }

    #[tokio::test]
    async fn only_a_changed_service_gets_a_new_generation_and_dropped_ones_are_removed() {
        let (store, _) = store();
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        let res = store
            .apply(
                &parse_stack(
                    "shop",
                    "services: {web: {image: web:2, deploy: {replicas: 3}}}",
                )
                .unwrap(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(res.services["web"], ApplyOutcome::Configured);
        assert_eq!(res.services["db"], ApplyOutcome::Removed);
        let view = store.stack_view("shop").await.unwrap().unwrap();
        assert_eq!(view.services.len(), 1);
        assert_eq!(view.services[0].generation, 2);
        assert_eq!(view.generation, 2, "the set of services changed");
    }

    #[tokio::test]
    async fn a_stale_resource_version_is_a_conflict_and_changes_nothing() {
        let (store, kv) = store();
        let first = store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        store.scale("shop", "web", 5, None).await.unwrap();
        store
            .apply(
                &parse_stack(
                    "shop",
                    "services: {web: {image: web:1}, db: {image: db:1}, extra: {image: x}}",
                )
                .unwrap(),
                None,
            )
            .await
            .unwrap();
        let writes = kv.writes();
        let err = store
            .apply(
                &parse_stack("shop", WEB).unwrap(),
                Some(first.resource_version),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Stale { .. }), "{err}");
        assert_eq!(kv.writes(), writes);
    }

    #[tokio::test]
    async fn scaling_a_service_that_writes_a_named_volume_is_refused_and_writes_nothing() {
        let (store, kv) = store();
        let yaml = "services: {db: {image: d, volumes: [\"data:/d\"]}, shared: {image: s, volumes: [\"common:/c\"]}, own: {image: o, volumes: [\"o-{{replica}}:/o\"]}}\nvolumes: {data: {}, common: {labels: {capstan.shared: \"true\"}}, \"o-{{replica}}\": {}}";
        store
            .apply(&parse_stack("shop", yaml).unwrap(), None)
            .await
            .unwrap();
        let writes = kv.writes();
        let err = store.scale("shop", "db", 2, None).await.unwrap_err();
        let StoreError::Invalid(invalid) = &err else {
            panic!("{err}");
        };
        assert_eq!(invalid.errors[0].field, "services.db.volumes[0]");
        assert!(invalid.errors[0].reason.contains("\"data\""), "{err}");
        assert_eq!(kv.writes(), writes, "a refused scale writes nothing");
        store.scale("shop", "shared", 3, None).await.unwrap();
        store.scale("shop", "own", 3, None).await.unwrap();
    }

    #[tokio::test]
    async fn scale_bumps_the_generation_once_and_respects_port_ranges() {
        let (store, _) = store();
        store
            .apply(
                &parse_stack(
                    "shop",
                    "services: {web: {image: w, ports: [\"8080-8081:80\"]}}",
                )
                .unwrap(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .scale("shop", "web", 2, None)
                .await
                .unwrap()
                .generation,
            2
        );
        assert_eq!(
            store
                .scale("shop", "web", 2, None)
                .await
                .unwrap()
                .generation,
            2
        );
        assert!(matches!(
            store.scale("shop", "web", 3, None).await.unwrap_err(),
            StoreError::Invalid(_)
        ));
        assert!(matches!(
            store.scale("shop", "nope", 3, None).await.unwrap_err(),
            StoreError::NotFound(_)
        ));
    }

    #[tokio::test]
    async fn apply_and_scale_refuse_to_move_a_port_between_the_engine_and_the_proxy() {
        let (store, _) = store();
        let file = |n: u32, extra: &str| {
            let yaml = format!("services: {{web: {{image: w, scale: {n}, ports: [{{target: 80, published: 8080{extra}}}]}}}}");
            parse_stack("shop", &yaml).unwrap()
        };
        store.apply(&file(1, ""), None).await.unwrap();
        let refused = |e: StoreError| match e {
            StoreError::Invalid(e) => {
                assert_eq!(e.errors[0].field, "services.web.ports[0]");
                assert!(
                    e.errors[0].reason.contains("x-capstan-proxy: true"),
                    "{e:?}"
                );
            }
            other => panic!("not a field error: {other:?}"),
        };
        refused(store.scale("shop", "web", 3, None).await.unwrap_err());
        refused(store.apply(&file(3, ""), None).await.unwrap_err());
        refused(store.dry_run(&file(3, ""), None).await.unwrap_err());
        assert_eq!(
            store
                .service("shop", "web")
                .await
                .unwrap()
                .unwrap()
                .spec
                .replicas,
            1
        );
        let opted = ", x-capstan-proxy: true";
        store.apply(&file(3, opted), None).await.unwrap();
        store.scale("shop", "web", 1, None).await.unwrap();
        store.scale("shop", "web", 0, None).await.unwrap();
        store.apply(&file(0, ""), None).await.unwrap();
        store.apply(&file(3, ""), None).await.unwrap();
        store.scale("shop", "web", 2, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_service_with_a_container_name_cannot_be_scaled_past_one() {
        let (store, _) = store();
        store
            .apply(
                &parse_stack("shop", "services: {web: {image: w, container_name: front}}").unwrap(),
                None,
            )
            .await
            .unwrap();
        match store.scale("shop", "web", 2, None).await.unwrap_err() {
            StoreError::Invalid(e) => assert_eq!(e.errors[0].field, "services.web.container_name"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store
                .scale("shop", "web", 0, None)
                .await
                .unwrap()
                .generation,
            2
        );
    }

    #[tokio::test]
    async fn a_deleting_stack_refuses_applies_until_it_is_finalized() {
        let (store, _) = store();
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        store.request_deletion("shop", false, None).await.unwrap();
        assert!(matches!(
            store
                .apply(&parse_stack("shop", WEB).unwrap(), None)
                .await
                .unwrap_err(),
            StoreError::Conflict(_)
        ));
        let snap = store.snapshot().await.unwrap();
        assert!(store.finalize_deletion(&snap.stacks[0]).await.unwrap());
        assert!(store.snapshot().await.unwrap().services.is_empty());
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_status_computed_for_an_old_spec_is_not_written() {
        let (store, _) = store();
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        let old = store
            .snapshot()
            .await
            .unwrap()
            .services
            .into_iter()
            .find(|s| s.name == "web")
            .unwrap();
        store.scale("shop", "web", 1, None).await.unwrap();
        assert!(!store
            .write_status(&old, &ServiceStatus::default())
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn replacing_a_subtree_leaves_exactly_the_new_keys() {
        let (store, _) = store();
        let p = "traefik/http/services/shop-web/";
        let url = |i: usize| {
            (
                format!("{p}loadbalancer/servers/{i}/url"),
                format!("http://10.0.0.{i}:80"),
            )
        };
        store
            .replace_subtree(p, vec![url(0), url(1), url(2)])
            .await
            .unwrap();
        store.replace_subtree(p, vec![url(0)]).await.unwrap();
        let keys: Vec<String> = store
            .kv
            .range(p)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, vec![url(0).0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_applies_without_a_version_all_land_and_the_last_one_stands() {
        let (store, _) = store();
        let first = store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        let image = |i: usize| format!("web:{i}");
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                let yaml = format!(
                    "services: {{web: {{image: '{}'}}, db: {{image: db:1}}}}",
                    image(i)
                );
                tokio::spawn(async move {
                    let spec = parse_stack("shop", &yaml).unwrap();
                    store.apply(&spec, None).await
                })
            })
            .collect();
        for task in tasks {
            let applied = task.await.unwrap();
            assert!(applied.is_ok(), "{:?}", applied.err());
        }
        let web = store.service("shop", "web").await.unwrap().unwrap();
        assert!(
            (0..20).any(|i| web.spec.image == image(i)),
            "{}",
            web.spec.image
        );
        let stale = store
            .apply(
                &parse_stack("shop", WEB).unwrap(),
                Some(first.resource_version),
            )
            .await
            .unwrap_err();
        assert!(matches!(stale, StoreError::Stale { .. }), "{stale}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_scales_without_a_version_all_land() {
        let (store, _) = store();
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        let tasks: Vec<_> = (1..=20)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.scale("shop", "db", n, None).await })
            })
            .collect();
        for task in tasks {
            let scaled = task.await.unwrap();
            assert!(scaled.is_ok(), "{:?}", scaled.err());
        }
        let db = store.service("shop", "db").await.unwrap().unwrap();
        assert!((1..=20).contains(&db.spec.replicas));
    }

    #[tokio::test]
    async fn an_unreachable_store_is_a_retryable_error() {
        let (store, kv) = store();
        kv.set_down(true);
        let err = store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap_err();
        assert!(err.is_retryable());
    }
}
