//! Images: before replicas are created, the service's image is made present as its
//! `pull_policy` says. `missing` (the default) pulls what the engine lacks; `always` pulls
//! before every batch of replicas created; `daily`, `weekly` and `every_<d>` also pull when
//! this daemon's last pull of the image is older than that; `never` and `build` never pull,
//! and a missing image is then `ErrImageNeverPull`.
//!
//! While a pull runs, the service's status says `PullingImage` (written before the pull);
//! a failed pull is `ImagePullBackOff` with the registry's words, and the image is not
//! pulled again before its back-off (0.5 s doubling to 60 s, per image, shared by the
//! services naming it) is over; the failing key backs off too ([`super::error`]).
//!
//! When each image was last pulled, and how its failures stand, is kept here, in this
//! daemon's memory ([`Pulls`]): the engine records no pull time. A restarted (or newly
//! elected) daemon has no record, so it pulls a `daily`/`weekly`/`every_` image again the
//! first time it creates a replica of it.

use capstan_api::object::{Condition, ConditionType, Reason, ServiceStatus};
use capstan_api::pull::PullPolicy;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

use super::error::RETRYABLE;
use super::observe::Observation;
use super::status::Problem;
use super::Context;
use crate::runtime::RuntimeError;
use crate::store::now_rfc3339;

/// One image's pull history in this daemon.
#[derive(Clone, Debug, Default)]
struct Book {
    last_pulled: Option<Instant>,
    /// Failed pulls in a row.
    failures: u32,
    /// No pull before this (the back-off after a failure).
    retry_at: Option<Instant>,
    /// The last failure, reported while backing off.
    last_error: String,
}

/// Image → its pull history, and the services whose status says `PullingImage` right now.
#[derive(Default)]
pub struct Pulls {
    images: Mutex<HashMap<String, Book>>,
    announced: Mutex<std::collections::HashSet<(String, String)>>,
}

/// What the policy asks for, given what the engine has and when this daemon last pulled.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Use,
    Pull,
    /// The image is missing and the policy forbids a pull.
    NeverPull,
}

/// Pure: whether to pull.
pub fn decide(
    policy: &PullPolicy,
    present: bool,
    since_pull: Option<std::time::Duration>,
) -> Decision {
    match policy {
        PullPolicy::Never | PullPolicy::Build if present => Decision::Use,
        PullPolicy::Never | PullPolicy::Build => Decision::NeverPull,
        PullPolicy::Always => Decision::Pull,
        PullPolicy::Missing if present => Decision::Use,
        PullPolicy::Missing => Decision::Pull,
        refreshing => match (present, since_pull, refreshing.refresh_after()) {
            (true, Some(age), Some(every)) if age < every => Decision::Use,
            _ => Decision::Pull,
        },
    }
}

impl Pulls {
    fn book(&self, image: &str) -> Book {
        let images = self.images.lock().unwrap();
        images.get(image).cloned().unwrap_or_default()
    }

    fn pulled(&self, image: &str) {
        let mut images = self.images.lock().unwrap();
        images.insert(
            image.to_string(),
            Book {
                last_pulled: Some(Instant::now()),
                ..Default::default()
            },
        );
    }

    fn failed(&self, image: &str, message: &str) {
        let mut images = self.images.lock().unwrap();
        let book = images.entry(image.to_string()).or_default();
        book.failures += 1;
        book.retry_at = Some(Instant::now() + RETRYABLE.delay(book.failures));
        book.last_error = message.to_string();
    }

    /// Services whose `PullingImage` status is not yet taken into account.
    pub fn remembered(&self) -> usize {
        self.announced.lock().unwrap().len()
    }

    /// Whether a `PullingImage` status was written for the service since it was last asked:
    /// the report then compares against that one.
    pub fn take_announced(&self, stack: &str, service: &str) -> bool {
        let mut announced = self.announced.lock().unwrap();
        announced.remove(&(stack.to_string(), service.to_string()))
    }
}

fn problem(reason: Reason, message: String) -> Problem {
    Problem {
        ordinal: 0,
        reason,
        message,
    }
}

/// Makes the service's image present as its `pull_policy` says. `Err`: replicas cannot be
/// created now, and why.
pub async fn ensure_image(ctx: &Context, obs: &Observation) -> Result<(), Problem> {
    let spec = &obs.service.spec;
    let image = spec.image.as_str();
    // An image capstan built lives on this host only: never pulled, whatever the file says.
    let built = spec.build.is_some() || capstan_api::build::is_built_image(image);
    let policy = match &spec.pull_policy {
        _ if built => PullPolicy::Build,
        p => p.clone().unwrap_or_default(),
    };
    let present = match ctx.runtime.has_image(image).await {
        Ok(p) => p,
        Err(e) => return Err(problem(Reason::EngineError, e.to_string())),
    };
    let book = ctx.pulls.book(image);
    let since = book.last_pulled.map(|t| t.elapsed());
    match decide(&policy, present, since) {
        Decision::Use => return Ok(()),
        Decision::NeverPull => {
            return Err(problem(
                Reason::ErrImageNeverPull,
                format!(
                    "image {image} is not on this host and pull_policy {} does not pull it: {}",
                    policy.as_compose(),
                    if built {
                        "capstan builds it: `capstan apply` (or `capstan build`) again"
                    } else if policy == PullPolicy::Build {
                        "build it first"
                    } else {
                        "load it (docker load, docker pull) or change the policy"
                    }
                ),
            ))
        }
        Decision::Pull => {}
    }
    if book.retry_at.is_some_and(|at| Instant::now() < at) {
        return Err(problem(Reason::ImagePullBackOff, book.last_error));
    }
    announce(ctx, obs, &policy).await;
    let service = &obs.service;
    tracing::info!(stack = %service.stack, service = %service.name, image, policy = %policy.as_compose(), "pulling image");
    match ctx.runtime.pull(image).await {
        Ok(()) => {
            ctx.pulls.pulled(image);
            tracing::info!(stack = %service.stack, service = %service.name, image, "pulled image");
            Ok(())
        }
        Err(e @ RuntimeError::Fenced { .. }) => Err(problem(Reason::EngineError, e.to_string())),
        Err(e) => {
            let message = e.to_string();
            ctx.pulls.failed(image, &message);
            Err(problem(Reason::ImagePullBackOff, message))
        }
    }
}

/// Writes the service's status with `PullingImage` before a pull, so that a long pull is
/// visible while it runs. A failed write only costs that visibility.
async fn announce(ctx: &Context, obs: &Observation, policy: &PullPolicy) {
    let service = &obs.service;
    let (stack, name) = (service.stack.as_str(), service.name.as_str());
    let previous = ctx.scratch.last_status(&ctx.desired, stack, name);
    let status = pulling(
        previous.as_deref(),
        &service.spec.image,
        policy,
        service.spec.replicas,
        &now_rfc3339(),
    );
    if previous.as_deref() == Some(&status) {
        return;
    }
    match ctx.store.write_status(service, &status).await {
        Ok(true) => {
            ctx.scratch.wrote_status(stack, name, status);
            let mut announced = ctx.pulls.announced.lock().unwrap();
            announced.insert((stack.to_string(), name.to_string()));
        }
        Ok(false) => {}
        Err(e) => {
            tracing::debug!(stack, service = name, error = %e, "the PullingImage status was not written")
        }
    }
}

/// The status while the image is pulled: the previous one, with `Progressing` (and `Ready`,
/// unless replicas are ready) saying `PullingImage` and the image. Pure.
pub fn pulling(
    previous: Option<&ServiceStatus>,
    image: &str,
    policy: &PullPolicy,
    desired: u32,
    now: &str,
) -> ServiceStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let message = format!(
        "pulling image {image} (pull_policy {})",
        policy.as_compose()
    );
    let mut set = |type_: ConditionType, status_: bool, message: String| {
        let mut c = Condition::new(type_, status_, Reason::PullingImage, message);
        let kept = status.conditions.iter().find(|p| p.type_ == c.type_);
        c.last_transition_time = match kept {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => now.to_string(),
        };
        status.conditions.retain(|p| p.type_ != c.type_);
        status.conditions.push(c);
    };
    set(ConditionType::Progressing, true, message.clone());
    if !previous.is_some_and(ServiceStatus::is_ready) {
        let ready = previous.map_or(0, |p| p.ready);
        set(
            ConditionType::Ready,
            false,
            format!("{ready}/{desired} replicas ready: {message}"),
        );
    }
    let order = |c: &Condition| match c.type_.as_str() {
        "Ready" => 0,
        "Progressing" => 1,
        _ => 2,
    };
    status.conditions.sort_by_key(order);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{Call, FakeRuntime};
    use crate::runtime::fence::{FencedRuntime, Gate, Verb};
    use crate::runtime::Runtime;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_follower_may_look_for_an_image_but_never_pulls_one() {
        struct Follower;
        impl Gate for Follower {
            fn permits(&self, verb: Verb) -> bool {
                verb == Verb::Read
            }
        }
        let fake = Arc::new(FakeRuntime::default());
        fake.push_to_registry("web:1");
        let fenced = FencedRuntime {
            inner: fake.clone(),
            gate: Arc::new(Follower),
        };
        assert!(fenced.has_image("web:1").await.is_ok());
        let pulled = fenced.pull("web:1").await;
        assert!(
            matches!(pulled, Err(RuntimeError::Fenced { op: "pull" })),
            "{pulled:?}"
        );
        assert_eq!(fake.count(|c| matches!(c, Call::Pull { .. })), 0);
    }

    #[test]
    fn each_policy_pulls_when_compose_would() {
        let day = Some(Duration::from_secs(86400));
        let hour = Some(Duration::from_secs(3600));
        let every_2h = PullPolicy::parse("every_2h").unwrap();
        use Decision::*;
        let cases = [
            (PullPolicy::Missing, true, None, Use),
            (PullPolicy::Missing, false, None, Pull),
            (PullPolicy::Always, true, hour, Pull),
            (PullPolicy::Never, true, None, Use),
            (PullPolicy::Never, false, None, NeverPull),
            (PullPolicy::Build, false, None, NeverPull),
            (PullPolicy::Daily, true, hour, Use),
            (PullPolicy::Daily, true, day, Pull),
            (PullPolicy::Daily, true, None, Pull),
            (PullPolicy::Weekly, false, hour, Pull),
            (every_2h.clone(), true, hour, Use),
            (every_2h, true, Some(Duration::from_secs(7200)), Pull),
        ];
        for (policy, present, since, want) in cases {
            assert_eq!(
                decide(&policy, present, since),
                want,
                "{} present={present} since={since:?}",
                policy.as_compose()
            );
        }
    }

    #[test]
    fn the_pulling_status_names_the_image_and_keeps_the_rest() {
        let s = pulling(None, "r:5000/web:1", &PullPolicy::Missing, 2, "t0");
        let progressing = s.condition(ConditionType::Progressing).unwrap();
        assert_eq!(progressing.reason, "PullingImage");
        assert!(progressing.message.contains("r:5000/web:1"));
        assert_eq!(
            s.condition(ConditionType::Ready).unwrap().reason,
            "PullingImage"
        );

        let mut ready = ServiceStatus::default();
        ready.conditions.push(Condition::new(
            ConditionType::Ready,
            true,
            Reason::AllReplicasReady,
            "2/2".into(),
        ));
        let s = pulling(Some(&ready), "web:2", &PullPolicy::Always, 2, "t1");
        assert!(s.is_ready(), "a rollout's old replicas still serve");
        assert_eq!(
            s.condition(ConditionType::Progressing)
                .unwrap()
                .last_transition_time,
            "t1"
        );
    }
}
