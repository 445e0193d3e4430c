//! The desired state in etcd: typed keys, apply as one compare-and-swap transaction, and
//! status writes guarded by the spec they were computed for.
//!
//! Keys (under `<prefix>/v1/`): `stacks/<stack>`, `services/<stack>/<service>`,
//! `status/<stack>/<service>`.

pub mod etcd;
pub mod fence;
pub mod kv;
pub mod lease;
pub mod memory;

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
    /// A named resourceVersion no longer matches, or a concurrent writer kept winning.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A stored value did not decode: a bug or a foreign writer under our prefix.
    #[error("stored value at {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Kv(KvError::Unavailable(_)))
    }
}

/// What a key under the prefix names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Stack(String),
    Service(String, String),
    Status(String, String),
    Endpoints(String, String),
}

/// Typed access to capstan's keys.
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
    /// `<prefix>/v1/`, so two installations can share one etcd.
    root: String,
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

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("capstan objects always serialise")
}

/// How many times apply re-reads and retries when a concurrent writer changed the stack.
const APPLY_ATTEMPTS: usize = 5;

impl Store {
    pub fn new(kv: Arc<dyn Kv>, prefix: &str) -> Self {
        Store {
            kv,
            root: format!("{}/v1/", prefix.trim_end_matches('/')),
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
    fn service_key(&self, stack: &str, svc: &str) -> String {
        format!("{}services/{stack}/{svc}", self.root)
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
            ["services", s, v] => Some(KeyKind::Service(s.to_string(), v.to_string())),
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
        let listing = self.kv.range(&self.root).await?;
        let mut snap = Snapshot {
            revision: listing.revision,
            ..Default::default()
        };
        for kv in &listing.items {
            match self.classify(&kv.key) {
                Some(KeyKind::Stack(_)) => snap.stacks.push(Self::decode_stack(kv)?),
                Some(KeyKind::Service(..)) => snap.services.push(Self::decode_service(kv)?),
                Some(KeyKind::Status(s, v)) => snap.statuses.push((s, v, Self::decode_status(kv)?)),
                Some(KeyKind::Endpoints(..)) => snap.endpoints.push(decode(kv)?),
                None => {}
            }
        }
        Ok(snap)
    }

    async fn read_stack(&self, stack: &str) -> Result<Option<(Stack, Vec<Service>)>, StoreError> {
        let Some(kv) = self.kv.get(&self.stack_key(stack)).await? else {
            return Ok(None);
        };
        let st = Self::decode_stack(&kv)?;
        let services = self
            .kv
            .range(&self.services_prefix(stack))
            .await?
            .items
            .iter()
            .map(Self::decode_service)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((st, services)))
    }

    /// Declares `spec` as the whole desired state of its stack, in one transaction: changed
    /// services get a new generation, services the spec no longer names are removed, and an
    /// identical apply writes nothing. With `expected`, the stack's resourceVersion must still
    /// be that (409 otherwise).
    pub async fn apply(
        &self,
        spec: &StackSpec,
        expected: Option<i64>,
    ) -> Result<ApplyResult, StoreError> {
        for _ in 0..APPLY_ATTEMPTS {
            let current = self.read_stack(&spec.name).await?;
            check_applicable(spec, current.as_ref(), expected)?;
            let (compares, ops, mut result) = self.apply_txn(spec, current);
            if ops.is_empty() {
                return Ok(result);
            }
            if self.kv.txn(compares, ops).await? {
                if let Some(kv) = self.kv.get(&self.stack_key(&spec.name)).await? {
                    result.resource_version = kv.mod_revision;
                }
                return Ok(result);
            }
            if expected.is_some() {
                return Err(StoreError::Conflict(format!(
                    "stack {} changed while it was being applied; read it again and retry",
                    spec.name
                )));
            }
        }
        Err(StoreError::Conflict(format!(
            "stack {} kept changing under concurrent writers; try again",
            spec.name
        )))
    }

    /// A put of the stack's record, if its own part (services, networks, volumes) changed.
    fn stack_record(
        &self,
        spec: &StackSpec,
        current_rv: i64,
        old: &Stack,
        now: String,
    ) -> Option<Op> {
        let services: Vec<String> = spec.services.keys().cloned().collect();
        let changed = current_rv == 0
            || old.services != services
            || old.networks != spec.networks
            || old.volumes != spec.volumes;
        let next = Stack {
            name: spec.name.clone(),
            generation: old.generation + 1,
            resource_version: 0,
            created_at: if current_rv == 0 {
                now
            } else {
                old.created_at.clone()
            },
            services,
            networks: spec.networks.clone(),
            volumes: spec.volumes.clone(),
            deletion: None,
        };
        changed.then(|| Op::Put(self.stack_key(&spec.name), encode(&next)))
    }

    /// The transaction that turns `current` into `spec`: a compare on every key it read, a
    /// put for every new or changed service (and the stack record, if its own part
    /// changed), deletes for the services `spec` no longer names; and the outcome per service.
    fn apply_txn(
        &self,
        spec: &StackSpec,
        current: Option<(Stack, Vec<Service>)>,
    ) -> (Vec<Compare>, Vec<Op>, ApplyResult) {
        let current_rv = current.as_ref().map_or(0, |(s, _)| s.resource_version);
        let now = now_rfc3339();
        let (old_stack, old_services) = current.unwrap_or_default();
        let old: BTreeMap<&str, &Service> =
            old_services.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut compares = vec![Compare::ModRevision(self.stack_key(&spec.name), current_rv)];
        let mut ops = vec![];
        let mut result = ApplyResult {
            stack: spec.name.clone(),
            resource_version: current_rv,
            services: BTreeMap::new(),
            dry_run: false,
        };
        for (name, svc_spec) in &spec.services {
            let key = self.service_key(&spec.name, name);
            let (outcome, next) = match old.get(name.as_str()) {
                Some(prev) if prev.spec == *svc_spec => (ApplyOutcome::Unchanged, None),
                Some(prev) => {
                    compares.push(Compare::ModRevision(key.clone(), prev.resource_version));
                    let next = Service {
                        generation: prev.generation + 1,
                        spec: svc_spec.clone(),
                        ..(*prev).clone()
                    };
                    (ApplyOutcome::Configured, Some(next))
                }
                None => {
                    compares.push(Compare::ModRevision(key.clone(), 0));
                    let next = Service {
                        stack: spec.name.clone(),
                        name: name.clone(),
                        generation: 1,
                        resource_version: 0,
                        created_at: now.clone(),
                        spec: svc_spec.clone(),
                    };
                    (ApplyOutcome::Created, Some(next))
                }
            };
            ops.extend(next.map(|next| Op::Put(key, encode(&next))));
            result.services.insert(name.clone(), outcome);
        }
        for prev in old_services
            .iter()
            .filter(|p| !spec.services.contains_key(&p.name))
        {
            let key = self.service_key(&spec.name, &prev.name);
            compares.push(Compare::ModRevision(key.clone(), prev.resource_version));
            ops.push(Op::Delete(key));
            ops.push(Op::Delete(self.status_key(&spec.name, &prev.name)));
            ops.push(Op::Delete(self.endpoints_key(&spec.name, &prev.name)));
            result
                .services
                .insert(prev.name.clone(), ApplyOutcome::Removed);
        }
        ops.extend(self.stack_record(spec, current_rv, &old_stack, now));
        (compares, ops, result)
    }

    /// What [`Store::apply`] would do, checked the same way and computed by the same
    /// transaction builder, with nothing written (`capstan apply --dry-run`).
    pub async fn dry_run(
        &self,
        spec: &StackSpec,
        expected: Option<i64>,
    ) -> Result<ApplyResult, StoreError> {
        let current = self.read_stack(&spec.name).await?;
        check_applicable(spec, current.as_ref(), expected)?;
        let (_, _, mut result) = self.apply_txn(spec, current);
        result.dry_run = true;
        Ok(result)
    }

    /// Sets one service's replica count (a declarative change of one field).
    pub async fn scale(
        &self,
        stack: &str,
        service: &str,
        replicas: u32,
    ) -> Result<Service, StoreError> {
        for _ in 0..APPLY_ATTEMPTS {
            let (st, services) = self
                .read_stack(stack)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("stack {stack} not found")))?;
            if st.deletion.is_some() {
                return Err(StoreError::Conflict(format!(
                    "stack {stack} is being deleted"
                )));
            }
            let prev = services
                .into_iter()
                .find(|s| s.name == service)
                .ok_or_else(|| {
                    StoreError::NotFound(format!("service {service} not found in stack {stack}"))
                })?;
            let mut svc_spec = prev.spec.clone();
            svc_spec.replicas = replicas;
            check_ports(stack, service, &svc_spec)?;
            if prev.spec.replicas == replicas {
                return Ok(prev);
            }
            let next = Service {
                generation: prev.generation + 1,
                spec: svc_spec,
                ..prev.clone()
            };
            let key = self.service_key(stack, service);
            if self
                .kv
                .txn(
                    vec![Compare::ModRevision(key.clone(), prev.resource_version)],
                    vec![Op::Put(key.clone(), encode(&next))],
                )
                .await?
            {
                return Ok(next);
            }
        }
        Err(StoreError::Conflict(format!(
            "service {stack}/{service} kept changing under concurrent writers; try again"
        )))
    }

    /// Records the deletion of a stack. The controller tears it down and then removes its keys.
    pub async fn request_deletion(&self, stack: &str, volumes: bool) -> Result<(), StoreError> {
        for _ in 0..APPLY_ATTEMPTS {
            let kv = self
                .kv
                .get(&self.stack_key(stack))
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("stack {stack} not found")))?;
            let mut st = Self::decode_stack(&kv)?;
            if st.deletion.as_ref().is_some_and(|d| d.volumes || !volumes) {
                return Ok(());
            }
            st.deletion = Some(Deletion {
                requested_at: now_rfc3339(),
                volumes,
            });
            let key = self.stack_key(stack);
            if self
                .kv
                .txn(
                    vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                    vec![Op::Put(key, encode(&st))],
                )
                .await?
            {
                return Ok(());
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

    /// Writes a status computed for `service` at its resourceVersion. If the spec changed
    /// meanwhile the write is skipped (Ok(false)): that status is already stale.
    pub async fn write_status(
        &self,
        service: &Service,
        status: &ServiceStatus,
    ) -> Result<bool, StoreError> {
        let guard = Compare::ModRevision(
            self.service_key(&service.stack, &service.name),
            service.resource_version,
        );
        Ok(self
            .kv
            .txn(
                vec![guard],
                vec![Op::Put(
                    self.status_key(&service.stack, &service.name),
                    encode(status),
                )],
            )
            .await?)
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
        let Some((st, services)) = self.read_stack(stack).await? else {
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
        let snap = self.snapshot().await?;
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
        Ok(out)
    }
}

fn view_of(
    st: Stack,
    services: Vec<Service>,
    statuses: &BTreeMap<(String, String), ServiceStatus>,
) -> StackView {
    let mut views: Vec<ServiceView> = services
        .iter()
        .map(|s| ServiceView::new(s, statuses.get(&(s.stack.clone(), s.name.clone()))))
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
    }
}

/// Whether an apply may go ahead: the stack is at the version the caller read (if it named
/// one), and not being deleted.
fn check_applicable(
    spec: &StackSpec,
    current: Option<&(Stack, Vec<Service>)>,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    let current_rv = current.map_or(0, |(s, _)| s.resource_version);
    if let Some(rv) = expected.filter(|rv| *rv != current_rv) {
        return Err(StoreError::Conflict(format!(
            "stack {} is at resourceVersion {current_rv}, not {rv}: it changed since you read it; read it again and retry",
            spec.name
        )));
    }
    if current.is_some_and(|(st, _)| st.deletion.is_some()) {
        return Err(StoreError::Conflict(format!(
            "stack {} is being deleted; apply again once it is gone",
            spec.name
        )));
    }
    Ok(())
}

/// The rules a scale must keep: as many host ports as replicas, and one replica for a
/// service with a `container_name` or a fixed address.
fn check_ports(
    stack: &str,
    service: &str,
    spec: &capstan_api::spec::ServiceSpec,
) -> Result<(), StoreError> {
    let single: Vec<capstan_api::FieldError> = spec
        .single_replica_problems()
        .into_iter()
        .map(|(field, reason)| capstan_api::FieldError {
            field: format!("services.{service}.{field}"),
            reason,
        })
        .collect();
    if !single.is_empty() {
        return Err(StoreError::Invalid(InvalidStack { errors: single }));
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if let Some(reason) = p.replicas_problem(&format!("{stack}/{service}"), spec.replicas) {
            return Err(StoreError::Invalid(InvalidStack {
                errors: vec![capstan_api::FieldError {
                    field: format!("services.{service}.ports[{i}]"),
                    reason,
                }],
            }));
        }
    }
    Ok(())
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
        store.scale("shop", "web", 5).await.unwrap();
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
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert_eq!(kv.writes(), writes);
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
        assert_eq!(store.scale("shop", "web", 2).await.unwrap().generation, 2);
        assert_eq!(store.scale("shop", "web", 2).await.unwrap().generation, 2);
        assert!(matches!(
            store.scale("shop", "web", 3).await.unwrap_err(),
            StoreError::Invalid(_)
        ));
        assert!(matches!(
            store.scale("shop", "nope", 3).await.unwrap_err(),
            StoreError::NotFound(_)
        ));
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
        match store.scale("shop", "web", 2).await.unwrap_err() {
            StoreError::Invalid(e) => assert_eq!(e.errors[0].field, "services.web.container_name"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.scale("shop", "web", 0).await.unwrap().generation, 2);
    }

    #[tokio::test]
    async fn a_deleting_stack_refuses_applies_until_it_is_finalized() {
        let (store, _) = store();
        store
            .apply(&parse_stack("shop", WEB).unwrap(), None)
            .await
            .unwrap();
        store.request_deletion("shop", false).await.unwrap();
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
        store.scale("shop", "web", 1).await.unwrap();
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
