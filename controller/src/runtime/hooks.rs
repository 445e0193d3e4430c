//! `post_start` and `pre_stop`: a service's hooks, run in a replica through the engine's exec
//! API as Compose runs them, in order, each bounded by [`HOOK_TIMEOUT`].
//!
//! What a failure means, where the Compose specification is silent: Compose's `up` fails
//! when a `post_start` hook does, so a replica whose hook failed is not made: it is removed
//! again, and the next try waits out the replica's back-off (the status says `HookFailed`
//! with the hook and its exit code). A `pre_stop` hook runs only in a running replica ("these
//! hooks won't run if the container stops by itself"); a failed one is logged and the replica
//! is stopped anyway: a controller that kept a replica it must remove would block scale-down,
//! rollouts and deletion on a script.

use capstan_api::spec::Hook;
use std::time::Duration;

use super::{HookKind, HookOutcome, Observed, Runtime, RuntimeError, State, HOOK_TIMEOUT};

/// Runs `hooks` in container `id`, in order; the first failure ends the run.
pub async fn run(
    runtime: &dyn Runtime,
    id: &str,
    kind: HookKind,
    hooks: &[Hook],
) -> Result<(), RuntimeError> {
    for (index, hook) in hooks.iter().enumerate() {
        let failed = |outcome| RuntimeError::Hook {
            hook: kind,
            index,
            command: hook.command.join(" "),
            outcome,
        };
        match tokio::time::timeout(HOOK_TIMEOUT, runtime.exec(id, hook)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(code)) => return Err(failed(HookOutcome::Exited(code))),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(failed(HookOutcome::TimedOut(HOOK_TIMEOUT))),
        }
    }
    Ok(())
}

/// Stops and removes `c` within `grace`, after its `pre_stop` hooks if it runs.
pub async fn stop_and_remove(
    runtime: &dyn Runtime,
    c: &Observed,
    pre_stop: &[Hook],
    grace: Duration,
) -> Result<(), RuntimeError> {
    if c.state == State::Running && !pre_stop.is_empty() {
        if let Err(e) = run(runtime, &c.id, HookKind::PreStop, pre_stop).await {
            tracing::warn!(stack = %c.stack, service = %c.service, replica = %c.name, error = %e, "a pre_stop hook failed; the replica is stopped anyway");
        }
    }
    runtime.remove(&c.id, grace).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{replica_plan, Call, FakeRuntime};

    fn hook(command: &str) -> Hook {
        Hook {
            command: command.split(' ').map(String::from).collect(),
            ..Default::default()
        }
    }

    async fn running(fake: &FakeRuntime) -> Observed {
        let id = fake.create(&replica_plan("s", "web", 1)).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.container("s-web-1").unwrap()
    }

    #[tokio::test]
    async fn hooks_run_in_order_and_the_first_failure_names_the_hook_and_its_exit_code() {
        let fake = FakeRuntime::default();
        let c = running(&fake).await;
        let hooks = [hook("a 1"), hook("b"), hook("c")];
        run(&fake, &c.id, HookKind::PostStart, &hooks)
            .await
            .unwrap();
        assert_eq!(fake.execs("s-web-1"), vec!["a 1", "b", "c"]);
        fake.on_exec("s-web-1", 3);
        let err = run(&fake, &c.id, HookKind::PostStart, &hooks)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                RuntimeError::Hook {
                    hook: HookKind::PostStart,
                    index: 0,
                    outcome: HookOutcome::Exited(3),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "post_start[0] `a 1` exited with code 3");
    }

    #[tokio::test]
    async fn a_failed_pre_stop_hook_still_stops_the_replica_and_a_stopped_one_runs_none() {
        let fake = FakeRuntime::default();
        let c = running(&fake).await;
        fake.on_exec("*", 1);
        stop_and_remove(&fake, &c, &[hook("flush")], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(fake.container("s-web-1").is_none());
        let c = running(&fake).await;
        fake.exit("s-web-1", 0);
        let exited = fake.container("s-web-1").unwrap();
        stop_and_remove(&fake, &exited, &[hook("flush")], Duration::ZERO)
            .await
            .unwrap();
        let execs = fake.count(|call| matches!(call, Call::Exec { .. }));
        assert_eq!(execs, 1, "only the running replica ran its hook: {c:?}");
    }
}
