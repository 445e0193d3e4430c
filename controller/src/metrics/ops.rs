//! The operations the measured decorators time: the `op` label of the etcd and Docker
//! request families, each created at 0 errors before its first call.

/// The etcd requests [`super::MeasuredKv`] times: the `op` label of
/// `capstan_etcd_request_duration_seconds` and `capstan_etcd_request_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdOp {
    Range,
    Get,
    Txn,
    Watch,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
}

impl EtcdOp {
    pub const ALL: [EtcdOp; 7] = [
        EtcdOp::Range,
        EtcdOp::Get,
        EtcdOp::Txn,
        EtcdOp::Watch,
        EtcdOp::LeaseGrant,
        EtcdOp::LeaseKeepAlive,
        EtcdOp::LeaseRevoke,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EtcdOp::Range => "range",
            EtcdOp::Get => "get",
            EtcdOp::Txn => "txn",
            EtcdOp::Watch => "watch",
            EtcdOp::LeaseGrant => "lease_grant",
            EtcdOp::LeaseKeepAlive => "lease_keep_alive",
            EtcdOp::LeaseRevoke => "lease_revoke",
        }
    }
}

/// The Docker Engine calls [`super::MeasuredRuntime`] times: the `op` label of
/// `capstan_docker_request_duration_seconds` and `capstan_docker_request_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerOp {
    List,
    Create,
    Start,
    Restart,
    Inspect,
    Remove,
    Wait,
    ListOneoffs,
    Rename,
    EnsureNetwork,
    EnsureVolume,
    ListNetworks,
    ListVolumes,
    RemoveNetwork,
    RemoveVolume,
    InspectImage,
    Pull,
    Ping,
    Attach,
    Exec,
}

impl DockerOp {
    pub const ALL: [DockerOp; 20] = [
        DockerOp::List,
        DockerOp::Create,
        DockerOp::Start,
        DockerOp::Restart,
        DockerOp::Inspect,
        DockerOp::Remove,
        DockerOp::Wait,
        DockerOp::ListOneoffs,
        DockerOp::Rename,
        DockerOp::EnsureNetwork,
        DockerOp::EnsureVolume,
        DockerOp::ListNetworks,
        DockerOp::ListVolumes,
        DockerOp::RemoveNetwork,
        DockerOp::RemoveVolume,
        DockerOp::InspectImage,
        DockerOp::Pull,
        DockerOp::Ping,
        DockerOp::Attach,
        DockerOp::Exec,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DockerOp::List => "list",
            DockerOp::Create => "create",
            DockerOp::Start => "start",
            DockerOp::Restart => "restart",
            DockerOp::Inspect => "inspect",
            DockerOp::Remove => "remove",
            DockerOp::Wait => "wait",
            DockerOp::ListOneoffs => "list_oneoffs",
            DockerOp::Rename => "rename",
            DockerOp::EnsureNetwork => "ensure_network",
            DockerOp::EnsureVolume => "ensure_volume",
            DockerOp::ListNetworks => "list_networks",
            DockerOp::ListVolumes => "list_volumes",
            DockerOp::RemoveNetwork => "remove_network",
            DockerOp::RemoveVolume => "remove_volume",
            DockerOp::InspectImage => "inspect_image",
            DockerOp::Pull => "pull",
            DockerOp::Ping => "ping",
            DockerOp::Attach => "attach",
            DockerOp::Exec => "exec",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_operation_is_listed_once_with_its_own_label() {
        let etcd: HashSet<&str> = EtcdOp::ALL.iter().map(|o| o.as_str()).collect();
        let docker: HashSet<&str> = DockerOp::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            (etcd.len(), docker.len()),
            (EtcdOp::ALL.len(), DockerOp::ALL.len())
        );
        // Does not compile when an operation is added: add it to ALL too.
        let _ = |e: EtcdOp, d: DockerOp| {
            use DockerOp::*;
            use EtcdOp::*;
            match e {
                Range | Get | Txn | Watch | LeaseGrant | LeaseKeepAlive | LeaseRevoke => (),
            }
            match d {
                List | Create | Start | Restart | Inspect | Remove | Wait | ListOneoffs
                | Rename | EnsureNetwork | EnsureVolume | ListNetworks | ListVolumes
                | RemoveNetwork | RemoveVolume | InspectImage | Pull | Ping | Attach | Exec => (),
            }
        };
    }
}
