//! Apply on the versioned layout (see [`super::layout`]): new versions of the changed
//! services are staged in bounded transactions, each guarded by the record's revision (so a
//! loser of a race stops early); then one small transaction swaps the record, which is the
//! commit; then the versions no record names any more are collected in bounded transactions.
//! A small apply does all of it in one transaction.

use capstan_api::object::*;
use capstan_api::spec::{ServiceSpec, StackSpec};
use std::collections::BTreeMap;
use std::time::Duration;

use super::layout::{batches, fits, new_token};
use super::{check_applicable, encode, now_rfc3339, Compare, Current, Op, Store, StoreError};

/// How many times a read re-reads when a concurrent commit collected what it was reading.
pub(super) const APPLY_ATTEMPTS: usize = 5;

/// The most compare-and-swaps a write that names no resourceVersion makes, and the longest
/// it keeps making them: such a client asked for last-writer-wins (as `kubectl apply`
/// gives it), so a lost race is tried again, re-read and re-checked, until it lands.
pub(super) const UNVERSIONED_ATTEMPTS: u32 = 50;
pub(super) const UNVERSIONED_BUDGET: Duration = Duration::from_secs(5);
/// The longest pause between two tries; each pause is random up to a bound that grows with
/// the tries, so writers that lost together do not collide again in step.
const MAX_PAUSE: Duration = Duration::from_millis(25);

/// Whether a write that lost its compare-and-swap tries again: never when the caller named a
/// version (that is its 409), else within [`UNVERSIONED_ATTEMPTS`] and
/// [`UNVERSIONED_BUDGET`].
pub(super) struct Retry {
    /// The caller named a resourceVersion: a lost race is its conflict to resolve.
    versioned: bool,
    /// Compare-and-swaps made so far.
    attempts: u32,
    /// When the retries stop.
    deadline: tokio::time::Instant,
}

impl Retry {
    pub(super) fn new(expected: Option<i64>) -> Retry {
        Retry {
            versioned: expected.is_some(),
            attempts: 0,
            deadline: tokio::time::Instant::now() + UNVERSIONED_BUDGET,
        }
    }

    /// Counts one lost race (a compare-and-swap, or a read that other commits kept
    /// overtaking); true (after a short random pause) if the write should try again.
    pub(super) async fn lost(&mut self) -> bool {
        self.attempts += 1;
        if self.versioned || self.attempts >= UNVERSIONED_ATTEMPTS {
            return false;
        }
        let bound = (Duration::from_millis(1) * self.attempts).min(MAX_PAUSE);
        let pause = bound.mul_f64(jitter());
        if tokio::time::Instant::now() + pause >= self.deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        true
    }
}

/// A random fraction in [0, 1).
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// What an apply writes.
pub(super) struct Writes {
    pub result: ApplyResult,
    /// The next record; None when nothing changes.
    pub record: Option<Stack>,
    /// The new versions of created and changed services.
    pub staged: Vec<Service>,
    /// Version keys no record will name once this commits: the old versions of changed and
    /// removed services, and versions older than the record read that it never named (left
    /// by a failed apply).
    pub retired: Vec<String>,
    /// Services the spec no longer names (their status and endpoints go too).
    pub removed: Vec<String>,
    /// The values of the secrets and configs the new specs mount, staged with them.
    pub files: Vec<Op>,
    /// Version keys newer than the record read exist: another apply staging, or one that
    /// failed after the record was read. Collectable only once this commits.
    pub sweep_after: bool,
}

impl Store {
    /// Declares `spec` as the whole desired state of its stack, atomically for every reader:
    /// changed services get a new generation, services the spec no longer names are removed,
    /// and an identical apply writes nothing. With `expected`, the stack's resourceVersion must
    /// still be that (409 otherwise, with nothing changed); without, an apply that loses a
    /// race to another writer reads again and tries again ([`Retry`]).
    pub async fn apply(
        &self,
        spec: &StackSpec,
        expected: Option<i64>,
    ) -> Result<ApplyResult, StoreError> {
        let mut retry = Retry::new(expected);
        loop {
            let current = match self.read_stack(&spec.name).await {
                Err(e @ StoreError::ReadRaced(_)) => match retry.lost().await {
                    true => continue,
                    false => return Err(e),
                },
                read => read?,
            };
            check_applicable(spec, &current, expected)?;
            let mut plan = self.plan(spec, &current);
            if plan.record.is_none() {
                // Nothing to commit; versions a crash left before the record's last commit
                // can go all the same.
                if let Err(e) = self.collect(plan.retired).await {
                    tracing::warn!(stack = %spec.name, error = %e, "stray service versions not collected yet");
                }
                if let Err(e) = self.reseal(spec).await {
                    tracing::warn!(stack = %spec.name, error = %e, "secret values not sealed with the new key yet");
                }
                return Ok(plan.result);
            }
            if let Some(rev) = self.write(&plan, current.revision()).await? {
                plan.result.resource_version = rev;
                let live = live_services(spec, &plan, &current);
                let keep = self.file_keys_named(&spec.name, &super::files::live_specs(&live));
                self.collect_files(&spec.name, &keep, rev).await;
                return Ok(plan.result);
            }
            if retry.lost().await {
                continue;
            }
            if expected.is_some() {
                return Err(StoreError::Conflict(format!(
                    "stack {} changed while it was being applied; read it again and retry",
                    spec.name
                )));
            }
            return Err(StoreError::Conflict(format!(
                "stack {} kept changing under concurrent writers; try again",
                spec.name
            )));
        }
    }

    /// What [`Store::apply`] would do, checked the same way and computed by the same
    /// planner, with nothing written (`capstan apply --dry-run`).
    pub async fn dry_run(
        &self,
        spec: &StackSpec,
        expected: Option<i64>,
    ) -> Result<ApplyResult, StoreError> {
        let current = self.read_stack(&spec.name).await?;
        check_applicable(spec, &current, expected)?;
        let mut result = self.plan(spec, &current).result;
        result.dry_run = true;
        Ok(result)
    }

    /// Turns `current` into `spec`: the outcome per service, and what to write.
    fn plan(&self, spec: &StackSpec, current: &Current) -> Writes {
        let now = now_rfc3339();
        let old: BTreeMap<&str, &Service> = current
            .services
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let mut plan = Writes {
            result: ApplyResult {
                stack: spec.name.clone(),
                resource_version: current.revision(),
                services: BTreeMap::new(),
                dry_run: false,
            },
            record: None,
            staged: vec![],
            files: self.file_puts(spec),
            retired: vec![],
            removed: vec![],
            sweep_after: current
                .loose
                .iter()
                .any(|(_, rev)| *rev > current.revision()),
        };
        for (name, svc_spec) in &spec.services {
            let prev = old.get(name.as_str()).copied();
            // What `capstan rollout` set is not the file's to change.
            let wanted = ServiceSpec {
                rollout: prev.map(|p| p.spec.rollout.clone()).unwrap_or_default(),
                ..svc_spec.clone()
            };
            let outcome = match prev {
                // Applying the spec a rollback returned to acknowledges the rollback.
                Some(prev) if prev.spec == wanted && prev.rolled_back.is_none() => {
                    ApplyOutcome::Unchanged
                }
                Some(_) => ApplyOutcome::Configured,
                None => ApplyOutcome::Created,
            };
            if outcome != ApplyOutcome::Unchanged {
                let next = next_version(&spec.name, name, wanted, prev, &now, self.history_limit);
                plan.staged.push(next);
                plan.retired.extend(prev.map(|p| self.key_of(p)));
            }
            plan.result.services.insert(name.clone(), outcome);
        }
        for prev in old
            .values()
            .filter(|p| !spec.services.contains_key(&p.name))
        {
            plan.retired.push(self.key_of(prev));
            plan.removed.push(prev.name.clone());
            let outcome = ApplyOutcome::Removed;
            plan.result.services.insert(prev.name.clone(), outcome);
        }
        let stale = current
            .loose
            .iter()
            .filter(|(_, r)| *r < current.revision());
        plan.retired.extend(stale.map(|(key, _)| key.clone()));
        plan.record = next_record(spec, current, &plan, now);
        plan
    }

    fn key_of(&self, svc: &Service) -> String {
        self.version_key(&svc.stack, &svc.name, &svc.version)
    }

    /// Writes `plan` over the record read at `r0`; the commit's revision, or None when the
    /// record changed meanwhile (nothing visible was written).
    async fn write(&self, plan: &Writes, r0: i64) -> Result<Option<i64>, StoreError> {
        let record = plan
            .record
            .as_ref()
            .expect("a plan that writes has a record");
        let stack_key = self.stack_key(&record.name);
        let guard = || vec![Compare::ModRevision(stack_key.clone(), r0)];
        let staged: Vec<Op> = (plan.staged.iter())
            .map(|s| Op::Put(self.key_of(s), encode(s)))
            .chain(plan.files.iter().cloned())
            .collect();
        let commit = Op::Put(stack_key.clone(), encode(record));
        let mut whole = staged.clone();
        whole.extend(plan.retired.iter().cloned().map(Op::Delete));
        whole.extend(
            self.forgotten(&record.name, &plan.removed)
                .into_iter()
                .map(Op::Delete),
        );
        whole.push(commit.clone());
        if fits(&whole) {
            let Some(rev) = self.kv.txn_at(guard(), whole).await? else {
                return Ok(None);
            };
            let rev = self.committed_at(rev, &stack_key, &commit).await?;
            if plan.sweep_after {
                self.sweep(record, rev, &[]).await;
            }
            return Ok(Some(rev));
        }
        for batch in batches(staged) {
            if !self.kv.txn(guard(), batch).await? {
                return Ok(None);
            }
        }
        let Some(rev) = self.kv.txn_at(guard(), vec![commit.clone()]).await? else {
            return Ok(None);
        };
        let rev = self.committed_at(rev, &stack_key, &commit).await?;
        self.sweep(record, rev, &plan.removed).await;
        Ok(Some(rev))
    }

    /// The status and endpoints keys of `removed` services of `stack`.
    fn forgotten(&self, stack: &str, removed: &[String]) -> Vec<String> {
        removed
            .iter()
            .flat_map(|svc| [self.status_key(stack, svc), self.endpoints_key(stack, svc)])
            .collect()
    }

    /// After the commit of `record` at `rev`: removes, in bounded transactions, every version
    /// key of the stack that `record` does not name and that is older than `rev` (no later
    /// record can name it: a later apply stages after reading a record at `rev` or later),
    /// then the status and endpoints of `removed` services while `record` is still the
    /// latest. Best effort: the apply has committed; what is left is collected by the next.
    pub(super) async fn sweep(&self, record: &Stack, rev: i64, removed: &[String]) {
        if let Err(e) = self.try_sweep(record, rev, removed).await {
            tracing::warn!(stack = %record.name, error = %e,
                "old service versions not collected yet; the next apply collects them");
        }
    }

    async fn try_sweep(
        &self,
        record: &Stack,
        rev: i64,
        removed: &[String],
    ) -> Result<(), StoreError> {
        let listing = self.kv.range(&self.services_prefix(&record.name)).await?;
        let dead: Vec<String> = listing
            .items
            .into_iter()
            .filter(|kv| kv.mod_revision < rev && !self.named_by(record, &kv.key))
            .map(|kv| kv.key)
            .collect();
        self.collect(dead).await?;
        let guard = || vec![Compare::ModRevision(self.stack_key(&record.name), rev)];
        let forgotten = self.forgotten(&record.name, removed);
        for batch in batches(forgotten.into_iter().map(Op::Delete).collect()) {
            if !self.kv.txn(guard(), batch).await? {
                break;
            }
        }
        Ok(())
    }

    /// Deletes version keys no record can name again, in bounded transactions.
    async fn collect(&self, keys: Vec<String>) -> Result<(), StoreError> {
        for batch in batches(keys.into_iter().map(Op::Delete).collect()) {
            self.kv.txn(vec![], batch).await?;
        }
        Ok(())
    }

    /// Whether `key` is a version key that `record` commits.
    fn named_by(&self, record: &Stack, key: &str) -> bool {
        match self.classify(key) {
            Some(super::KeyKind::ServiceVersion(_, svc, token)) => {
                record.versions.get(&svc) == Some(&token)
            }
            _ => true,
        }
    }
}

/// The services the stack commits once `plan` is written: the staged versions and the
/// unchanged ones.
fn live_services(spec: &StackSpec, plan: &Writes, current: &Current) -> Vec<Service> {
    let mut live = plan.staged.clone();
    live.extend(
        current
            .services
            .iter()
            .filter(|s| {
                spec.services.contains_key(&s.name) && !plan.staged.iter().any(|n| n.name == s.name)
            })
            .cloned(),
    );
    live
}

/// A new version of service `name`: generation and revision 1 when created; else the
/// successor of `prev` ([`super::revisions::successor`]).
fn next_version(
    stack: &str,
    name: &str,
    spec: ServiceSpec,
    prev: Option<&Service>,
    now: &str,
    history_limit: usize,
) -> Service {
    let version = new_token();
    match prev {
        Some(p) => Service {
            version,
            ..super::revisions::successor(p, spec, None, now, history_limit)
        },
        None => Service {
            stack: stack.to_string(),
            name: name.to_string(),
            generation: 1,
            resource_version: 0,
            version,
            created_at: now.to_string(),
            spec,
            revision: RevisionMeta {
                number: 1,
                at: now.to_string(),
                change: "created".into(),
            },
            history: vec![],
            rolled_back: None,
        },
    }
}

/// The record after `plan`, or None when nothing at all changes. Its generation grows only
/// when the stack's own part (the set of services, networks, volumes) changes.
fn next_record(spec: &StackSpec, current: &Current, plan: &Writes, now: String) -> Option<Stack> {
    let old = current.record.clone().unwrap_or_default();
    let services: Vec<String> = spec.services.keys().cloned().collect();
    let own_changed = current.record.is_none()
        || old.services != services
        || old.networks != spec.networks
        || old.volumes != spec.volumes
        || old.profile != spec.profile;
    if !own_changed && plan.staged.is_empty() && plan.removed.is_empty() {
        return None;
    }
    let mut versions = old.versions.clone();
    versions.retain(|name, _| spec.services.contains_key(name));
    for s in &plan.staged {
        versions.insert(s.name.clone(), s.version.clone());
    }
    Some(Stack {
        name: spec.name.clone(),
        generation: old.generation + i64::from(own_changed),
        resource_version: 0,
        created_at: if current.record.is_none() {
            now
        } else {
            old.created_at
        },
        services,
        versions,
        networks: spec.networks.clone(),
        volumes: spec.volumes.clone(),
        profile: spec.profile.clone(),
        deletion: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_write_without_a_version_retries_a_bounded_number_of_times_and_one_with_a_version_never(
    ) {
        let mut versioned = Retry::new(Some(7));
        assert!(!versioned.lost().await, "a named version keeps its 409");
        let mut unversioned = Retry::new(None);
        let mut retries = 0;
        while unversioned.lost().await {
            retries += 1;
        }
        assert_eq!(retries, UNVERSIONED_ATTEMPTS - 1);
    }
}
