//! What a stack would mount from the host: the one list of host paths the bind policy
//! checks, and what the `local` volume driver's `driver_opts` would mount.
//!
//! The `local` driver passes `driver_opts` to mount(2) on the host: `type` is the file
//! system, `device` its source and `o` the options. So `{type: none, o: bind, device: /}`
//! binds the host's root, `{type: ext4, device: /dev/sda1}` mounts a host disk and
//! `{type: proc, device: proc}` the host's `/proc`. Each of these is a host-level feature.

use std::collections::BTreeMap;

use crate::spec::{MountKind, StackSpec, VolumeSpec};

/// A host path the engine would mount for a stack, and the field that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPath {
    /// Where it is written: `services.web.volumes[0]`, `volumes.data.driver_opts.device`.
    pub field: String,
    /// As written (absolute once `capstan apply` resolved relative binds).
    pub path: String,
}

/// What a named volume of the `local` driver mounts, read from its `driver_opts`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LocalMount<'a> {
    /// No options: a folder the engine makes under its own data root.
    Managed,
    /// A host folder or device, by path.
    HostPath(&'a str),
    /// A file system of this type, whose source is not a host path (tmpfs, nfs, proc...).
    FileSystem(&'a str),
}

/// Whether `o` (a comma list of mount options) asks for a bind.
fn binds(o: &str) -> bool {
    o.split(',')
        .any(|opt| matches!(opt.trim(), "bind" | "rbind"))
}

/// What the `local` driver would mount for these options. A bind's source is `device`
/// (the driver mounts it with `MS_BIND`); otherwise a `device` that is an absolute path is
/// a host path too (a block device or, for `type: none`, a folder).
pub(super) fn local_mount(opts: &BTreeMap<String, String>) -> LocalMount<'_> {
    if opts.is_empty() {
        return LocalMount::Managed;
    }
    let get = |key: &str| opts.get(key).map(String::as_str);
    let device = get("device").unwrap_or_default();
    let fs = get("type").unwrap_or_default();
    if binds(get("o").unwrap_or_default()) || device.starts_with('/') && !network_fs(fs) {
        return LocalMount::HostPath(device);
    }
    LocalMount::FileSystem(fs)
}

/// File systems whose `device` names a remote share, not a host path (`//server/share`
/// starts with a slash, yet is not one).
fn network_fs(fs: &str) -> bool {
    matches!(
        fs.to_ascii_lowercase().as_str(),
        "nfs" | "nfs4" | "cifs" | "smb3"
    )
}

/// Whether the volume is served by the `local` driver (the default).
pub(super) fn is_local(vol: &VolumeSpec) -> bool {
    vol.driver.as_deref().is_none_or(|d| d == "local")
}

/// The host path a named volume would mount: a `local` volume whose `driver_opts` bind a
/// folder or mount a device by its path. `None` for an external volume (it exists already
/// and is only joined), another driver's, or one the engine manages.
pub fn volume_host_path(vol: &VolumeSpec) -> Option<&str> {
    if vol.external || !is_local(vol) {
        return None;
    }
    match local_mount(&vol.driver_opts) {
        LocalMount::HostPath(path) => Some(path),
        _ => None,
    }
}

/// Every host path `spec` would have the engine mount: each service's bind mounts, then
/// each `local` named volume that binds or mounts a host path. External volumes exist
/// already and are only joined.
pub fn host_paths(spec: &StackSpec) -> Vec<HostPath> {
    let mut out = vec![];
    for (name, svc) in &spec.services {
        for (i, m) in svc.volumes.iter().enumerate() {
            if m.kind == MountKind::Bind {
                out.push(HostPath {
                    field: format!("services.{name}.volumes[{i}]"),
                    path: m.source.clone().unwrap_or_default(),
                });
            }
        }
    }
    for (key, vol) in &spec.volumes {
        if let Some(path) = volume_host_path(vol) {
            out.push(HostPath {
                field: format!("volumes.{key}.driver_opts.device"),
                path: path.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_bind_option_makes_the_device_a_host_path_whatever_the_type() {
        for o in ["bind", "rbind", "ro,bind", " bind , ro"] {
            let m = opts(&[("type", "none"), ("o", o), ("device", "/srv/x")]);
            assert_eq!(local_mount(&m), LocalMount::HostPath("/srv/x"), "{o}");
        }
        let tmpfs_bind = opts(&[("type", "tmpfs"), ("o", "bind"), ("device", "/")]);
        assert_eq!(local_mount(&tmpfs_bind), LocalMount::HostPath("/"));
    }

    #[test]
    fn a_device_path_is_a_host_path_unless_the_file_system_is_a_network_share() {
        let disk = opts(&[("type", "ext4"), ("device", "/dev/sda1")]);
        assert_eq!(local_mount(&disk), LocalMount::HostPath("/dev/sda1"));
        let share = opts(&[
            ("type", "cifs"),
            ("device", "//nas/share"),
            ("o", "addr=nas"),
        ]);
        assert_eq!(local_mount(&share), LocalMount::FileSystem("cifs"));
        let nfs = opts(&[("type", "nfs"), ("device", ":/export"), ("o", "addr=nas")]);
        assert_eq!(local_mount(&nfs), LocalMount::FileSystem("nfs"));
    }

    #[test]
    fn other_file_systems_are_named_by_their_type() {
        let proc = opts(&[("type", "proc"), ("device", "proc")]);
        assert_eq!(local_mount(&proc), LocalMount::FileSystem("proc"));
        let overlay = opts(&[
            ("type", "overlay"),
            ("o", "lowerdir=/,upperdir=/u,workdir=/w"),
        ]);
        assert_eq!(local_mount(&overlay), LocalMount::FileSystem("overlay"));
        assert_eq!(local_mount(&BTreeMap::new()), LocalMount::Managed);
    }

    #[test]
    fn host_paths_lists_binds_and_local_volume_devices_but_not_external_volumes() {
        let spec = crate::parse_stack(
            "s",
            "services: {web: {image: x, volumes: ['/srv/a:/a', 'data:/d', 'root:/r']}}
volumes:
  data: {}
  root: {driver_opts: {type: none, o: bind, device: /}}
  old: {external: true, driver_opts: {type: none, o: bind, device: /etc}}",
        )
        .unwrap();
        let paths: Vec<(String, String)> = host_paths(&spec)
            .into_iter()
            .map(|h| (h.field, h.path))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("services.web.volumes[0]".into(), "/srv/a".into()),
                ("volumes.root.driver_opts.device".into(), "/".into()),
            ]
        );
    }
}
