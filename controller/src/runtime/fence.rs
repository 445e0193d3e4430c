//! The engine side of fencing: a [`Runtime`] that asks, before every call, whether this
//! daemon may make it. A follower makes no engine call at all; a leader that lost etcd
//! (isolated) may read and restart existing replicas, nothing else; a leader whose lease may
//! have lapsed makes none, from the moment it could have lapsed, not from when it noticed.

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

use super::{
    ContainerConfig, ContainerEvent, Detail, LogChunk, LogOptions, Observed, OneOff,
    ResourceConfig, Runtime, RuntimeError,
};

/// What an engine call does, for the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Lists and inspects.
    Read,
    /// Starts or restarts a container that exists: healing.
    Heal,
    /// Creates or removes containers, networks, volumes.
    Change,
}

/// Who answers "may I?".
pub trait Gate: Send + Sync + 'static {
    fn permits(&self, verb: Verb) -> bool;
}

pub struct FencedRuntime {
    pub inner: Arc<dyn Runtime>,
    pub gate: Arc<dyn Gate>,
}

impl FencedRuntime {
    fn check(&self, verb: Verb, op: &'static str) -> Result<(), RuntimeError> {
        if self.gate.permits(verb) {
            Ok(())
        } else {
            Err(RuntimeError::Fenced { op })
        }
    }
}

#[async_trait]
impl Runtime for FencedRuntime {
    async fn list(
        &self,
        stack: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        self.check(Verb::Read, "list")?;
        self.inner.list(stack, service).await
    }
    async fn create(&self, plan: &ContainerConfig) -> Result<String, RuntimeError> {
        self.check(Verb::Change, "create")?;
        self.inner.create(plan).await
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.check(Verb::Heal, "start")?;
        self.inner.start(id).await
    }
    async fn restart(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.check(Verb::Heal, "restart")?;
        self.inner.restart(id, grace).await
    }
    async fn inspect(&self, id: &str) -> Result<Detail, RuntimeError> {
        self.check(Verb::Read, "inspect")?;
        self.inner.inspect(id).await
    }
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.check(Verb::Change, "remove")?;
        self.inner.remove(id, grace).await
    }
    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        self.check(Verb::Read, "wait")?;
        self.inner.wait(id).await
    }
    /// A hook is part of starting or stopping a replica: allowed where those are.
    async fn exec(&self, id: &str, hook: &capstan_api::spec::Hook) -> Result<i64, RuntimeError> {
        self.check(Verb::Heal, "exec")?;
        self.inner.exec(id, hook).await
    }
    async fn oneoffs(&self) -> Result<Vec<OneOff>, RuntimeError> {
        self.check(Verb::Read, "list_oneoffs")?;
        self.inner.oneoffs().await
    }
    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        self.check(Verb::Change, "rename")?;
        self.inner.rename(id, name).await
    }
    async fn ensure_network(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        self.check(Verb::Change, "ensure_network")?;
        self.inner.ensure_network(plan).await
    }
    async fn ensure_volume(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        self.check(Verb::Change, "ensure_volume")?;
        self.inner.ensure_volume(plan).await
    }
    async fn stack_networks(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        self.check(Verb::Read, "list_networks")?;
        self.inner.stack_networks(stack).await
    }
    async fn stack_volumes(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        self.check(Verb::Read, "list_volumes")?;
        self.inner.stack_volumes(stack).await
    }
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.check(Verb::Change, "remove_network")?;
        self.inner.remove_network(name).await
    }
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.check(Verb::Change, "remove_volume")?;
        self.inner.remove_volume(name).await
    }
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        self.check(Verb::Read, "inspect_image")?;
        self.inner.has_image(image).await
    }
    /// A pull changes the engine's images: a follower must not make it.
    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        self.check(Verb::Change, "pull")?;
        self.inner.pull(image).await
    }
    /// Not an action: readiness asks on followers too.
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.inner.ping().await
    }
    /// Reading output is a read: refused (as one error) only where lists are.
    fn logs(
        &self,
        id: &str,
        opts: &LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        match self.check(Verb::Read, "logs") {
            Ok(()) => self.inner.logs(id, opts),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }
    /// Reading a one-off's output is a read, as `logs` is.
    async fn attach(&self, id: &str) -> Result<super::LogStream, RuntimeError> {
        self.check(Verb::Read, "attach")?;
        self.inner.attach(id).await
    }
    /// The stream is opened by the events task, which runs only while this daemon may act.
    fn events(
        &self,
        since_nano: Option<i64>,
    ) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        self.inner.events(since_nano)
    }
}
