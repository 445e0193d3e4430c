//! The decorators that measure every etcd and Docker call, so no call site has to
//! remember to.

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DockerOp, EtcdOp, Metrics};
use crate::runtime::{
    ContainerConfig, ContainerEvent, Detail, LogChunk, LogOptions, Observed, OneOff,
    ResourceConfig, Runtime, RuntimeError,
};
use crate::store::kv::{Compare, KeyValue, Kv, KvError, LeaseId, Listing, Op, WatchEvent};

/// [`Kv`] that measures every request.
pub struct MeasuredKv {
    pub inner: Arc<dyn Kv>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl Kv for MeasuredKv {
    async fn range(&self, prefix: &str) -> Result<Listing, KvError> {
        let t = Instant::now();
        let r = self.inner.range(prefix).await;
        self.metrics.etcd(EtcdOp::Range, t, r.is_err());
        r
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.etcd(EtcdOp::Get, t, r.is_err());
        r
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<bool, KvError> {
        let t = Instant::now();
        let r = self.inner.txn(compares, ops).await;
        self.metrics.etcd(EtcdOp::Txn, t, r.is_err());
        r
    }
    async fn txn_at(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<Option<i64>, KvError> {
        let t = Instant::now();
        let r = self.inner.txn_at(compares, ops).await;
        self.metrics.etcd(EtcdOp::Txn, t, r.is_err());
        r
    }
    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Vec<WatchEvent>, KvError>>, KvError> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, from_revision).await;
        self.metrics.etcd(EtcdOp::Watch, t, r.is_err());
        r
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let t = Instant::now();
        let r = self.inner.grant_lease(ttl).await;
        self.metrics.etcd(EtcdOp::LeaseGrant, t, r.is_err());
        r
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, KvError> {
        let t = Instant::now();
        let r = self.inner.keep_alive(lease).await;
        self.metrics.etcd(EtcdOp::LeaseKeepAlive, t, r.is_err());
        r
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        let t = Instant::now();
        let r = self.inner.revoke_lease(lease).await;
        self.metrics.etcd(EtcdOp::LeaseRevoke, t, r.is_err());
        r
    }
}

/// [`Runtime`] that measures every Docker call.
pub struct MeasuredRuntime {
    pub inner: Arc<dyn Runtime>,
    pub metrics: Arc<Metrics>,
}

macro_rules! measured {
    ($self:ident, $op:ident, $call:expr) => {{
        let t = Instant::now();
        let r = $call.await;
        $self.metrics.docker(DockerOp::$op, t, r.is_err());
        r
    }};
}

#[async_trait]
impl Runtime for MeasuredRuntime {
    async fn list(
        &self,
        stack: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<Observed>, RuntimeError> {
        measured!(self, List, self.inner.list(stack, service))
    }
    async fn create(&self, plan: &ContainerConfig) -> Result<String, RuntimeError> {
        measured!(self, Create, self.inner.create(plan))
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        measured!(self, Start, self.inner.start(id))
    }
    async fn restart(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        measured!(self, Restart, self.inner.restart(id, grace))
    }
    async fn inspect(&self, id: &str) -> Result<Detail, RuntimeError> {
        measured!(self, Inspect, self.inner.inspect(id))
    }
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        measured!(self, Remove, self.inner.remove(id, grace))
    }
    async fn wait(&self, id: &str) -> Result<i64, RuntimeError> {
        measured!(self, Wait, self.inner.wait(id))
    }
    async fn exec(&self, id: &str, hook: &capstan_api::spec::Hook) -> Result<i64, RuntimeError> {
        measured!(self, Exec, self.inner.exec(id, hook))
    }
    async fn oneoffs(&self) -> Result<Vec<OneOff>, RuntimeError> {
        measured!(self, ListOneoffs, self.inner.oneoffs())
    }
    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        measured!(self, Rename, self.inner.rename(id, name))
    }
    async fn ensure_network(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        measured!(self, EnsureNetwork, self.inner.ensure_network(plan))
    }
    async fn ensure_volume(&self, plan: &ResourceConfig) -> Result<(), RuntimeError> {
        measured!(self, EnsureVolume, self.inner.ensure_volume(plan))
    }
    async fn stack_networks(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        measured!(self, ListNetworks, self.inner.stack_networks(stack))
    }
    async fn stack_volumes(&self, stack: &str) -> Result<Vec<String>, RuntimeError> {
        measured!(self, ListVolumes, self.inner.stack_volumes(stack))
    }
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        measured!(self, RemoveNetwork, self.inner.remove_network(name))
    }
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        measured!(self, RemoveVolume, self.inner.remove_volume(name))
    }
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        measured!(self, InspectImage, self.inner.has_image(image))
    }
    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        measured!(self, Pull, self.inner.pull(image))
    }
    async fn ping(&self) -> Result<(), RuntimeError> {
        measured!(self, Ping, self.inner.ping())
    }
    fn events(
        &self,
        since_nano: Option<i64>,
    ) -> BoxStream<'static, Result<ContainerEvent, RuntimeError>> {
        self.inner.events(since_nano)
    }
    /// A stream, not a call: not timed.
    fn logs(
        &self,
        id: &str,
        opts: &LogOptions,
    ) -> BoxStream<'static, Result<LogChunk, RuntimeError>> {
        self.inner.logs(id, opts)
    }
    /// Measures the attach call, not the stream it returns.
    async fn attach(&self, id: &str) -> Result<crate::runtime::LogStream, RuntimeError> {
        measured!(self, Attach, self.inner.attach(id))
    }
}
