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
//! daemon's memory ([`Pulls`], per image): the engine records no pull time. A restarted (or newly
//! elected) daemon has no record, so it pulls a `daily`/`weekly`/`every_` image again the
//! first time it creates a replica of it.

use capstan_api::object::Reason;
use capstan_api::pull::PullPolicy;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

use capstan_api::spec::ServiceSpec;

use crate::reconcile::error::RETRYABLE;
use crate::reconcile::status::Problem;
use crate::runtime::{Runtime, RuntimeError};

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

/// Image → its pull history. Per image, not per service: the services naming one image
/// share its pulls and its back-off.
#[derive(Default)]
pub struct Pulls {
    images: Mutex<HashMap<String, Book>>,
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

    /// The image was pulled now.
    pub fn pulled(&self, image: &str) {
        let mut images = self.images.lock().unwrap();
        images.insert(
            image.to_string(),
            Book {
                last_pulled: Some(Instant::now()),
                ..Default::default()
            },
        );
    }

    /// A pull of the image failed now: the next waits out its back-off.
    pub fn failed(&self, image: &str, message: &str) {
        let mut images = self.images.lock().unwrap();
        let book = images.entry(image.to_string()).or_default();
        book.failures += 1;
        book.retry_at = Some(Instant::now() + RETRYABLE.delay(book.failures));
        book.last_error = message.to_string();
    }
}

/// The service's image as observed: whether the engine has it, and this daemon's pulls of it.
#[derive(Debug)]
pub struct ImageState {
    /// Whether the engine has it; `Err`: the engine could not say.
    pub present: Result<bool, String>,
    /// How long ago this daemon last pulled it.
    pub since_pull: Option<std::time::Duration>,
    /// The failed pull's message, while its back-off runs.
    pub backing_off: Option<String>,
}

/// A pull to make, and the policy that asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pull {
    pub policy: PullPolicy,
}

/// Reads what the policy decides on.
pub async fn look(runtime: &dyn Runtime, pulls: &Pulls, spec: &ServiceSpec) -> ImageState {
    let present = runtime
        .has_image(&spec.image)
        .await
        .map_err(|e| e.to_string());
    let book = pulls.book(&spec.image);
    let backing_off = book.retry_at.is_some_and(|at| Instant::now() < at);
    ImageState {
        present,
        since_pull: book.last_pulled.map(|t| t.elapsed()),
        backing_off: backing_off.then_some(book.last_error),
    }
}

/// The policy that applies: an image capstan built lives on this host only and is never
/// pulled, whatever the file says.
fn policy_of(spec: &ServiceSpec) -> (PullPolicy, bool) {
    let built = spec.build.is_some() || capstan_api::build::is_built_image(&spec.image);
    match &spec.pull_policy {
        _ if built => (PullPolicy::Build, true),
        p => (p.clone().unwrap_or_default(), false),
    }
}

impl ImageState {
    /// Whether replicas may be made, and after which pull: `Ok(None)` uses the image as
    /// it is, `Ok(Some(_))` pulls it first, `Err` says why nothing can be made now. Pure.
    pub fn verdict(&self, spec: &ServiceSpec) -> Result<Option<Pull>, Problem> {
        let image = spec.image.as_str();
        let (policy, built) = policy_of(spec);
        let present = match &self.present {
            Ok(p) => *p,
            Err(e) => return Err(problem(Reason::EngineError, e.clone())),
        };
        match decide(&policy, present, self.since_pull) {
            Decision::Use => Ok(None),
            Decision::NeverPull => Err(problem(
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
            )),
            Decision::Pull => match &self.backing_off {
                Some(last_error) => Err(problem(Reason::ImagePullBackOff, last_error.clone())),
                None => Ok(Some(Pull { policy })),
            },
        }
    }
}

fn problem(reason: Reason, message: String) -> Problem {
    Problem {
        ordinal: 0,
        reason,
        message,
    }
}

/// Pulls the image; a failure starts (or lengthens) the image's back-off.
pub async fn pull(runtime: &dyn Runtime, pulls: &Pulls, image: &str) -> Result<(), Problem> {
    match runtime.pull(image).await {
        Ok(()) => {
            pulls.pulled(image);
            tracing::info!(image, "pulled image");
            Ok(())
        }
        Err(e @ RuntimeError::Fenced { .. }) => Err(problem(Reason::EngineError, e.to_string())),
        Err(e) => {
            let message = e.to_string();
            pulls.failed(image, &message);
            Err(problem(Reason::ImagePullBackOff, message))
        }
    }
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
}
