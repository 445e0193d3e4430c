//! A build context packed as Docker's CLI packs it: every file of the folder that
//! `.dockerignore` does not exclude (the Dockerfile and `.dockerignore` are always sent),
//! owned by root, as a tar; and its content digest: the sorted paths, their kinds, modes and
//! contents, and the build options, so the same context built the same way has the same
//! digest wherever the folder is and whatever the files' times.

use super::ignore::Ignore;
use anyhow::{bail, Context as _};
use capstan_api::build::BuildSpec;
use sha2::{Digest as _, Sha256};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Where a Dockerfile from outside the context, or `dockerfile_inline`, goes in the tar.
pub const EXTERNAL_DOCKERFILE: &str = ".capstan.Dockerfile";

enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

struct Entry {
    path: String,
    mode: u32,
    mtime: u64,
    kind: Kind,
}

/// A packed context.
pub struct Packed {
    pub tar: Vec<u8>,
    /// `sha256:<hex>` of the context and the content options.
    pub digest: String,
    /// The Dockerfile's path inside the tar.
    pub dockerfile: String,
    pub files: usize,
}

/// Packs `context` (an absolute folder) for `spec`.
pub fn pack(context: &Path, spec: &BuildSpec) -> anyhow::Result<Packed> {
    let meta = std::fs::metadata(context)
        .with_context(|| format!("build context {}", context.display()))?;
    if !meta.is_dir() {
        bail!("build context {} is not a folder", context.display());
    }
    let ignore = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text).map_err(anyhow::Error::msg)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(e).context("reading .dockerignore"),
    };
    let (dockerfile, external) = dockerfile(context, spec)?;
    let mut entries = vec![];
    walk(
        context,
        "",
        &ignore,
        &[&dockerfile, ".dockerignore"],
        &mut entries,
    )?;
    if let Some(content) = external {
        entries.retain(|e| e.path != EXTERNAL_DOCKERFILE);
        entries.push(Entry {
            path: EXTERNAL_DOCKERFILE.into(),
            mode: 0o644,
            mtime: 0,
            kind: Kind::File(content),
        });
    } else if !entries.iter().any(|e| e.path == dockerfile) {
        bail!(
            "the Dockerfile {} does not exist in the build context",
            context.join(&dockerfile).display()
        );
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let digest = digest(&entries, spec);
    let mut tar = vec![];
    for e in &entries {
        write_entry(&mut tar, e);
    }
    tar.extend_from_slice(&[0; 1024]);
    let files = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File(_)))
        .count();
    Ok(Packed {
        tar,
        digest,
        dockerfile,
        files,
    })
}

/// The Dockerfile's path in the tar, and its content when it is not a file of the context.
fn dockerfile(context: &Path, spec: &BuildSpec) -> anyhow::Result<(String, Option<Vec<u8>>)> {
    if let Some(inline) = &spec.dockerfile_inline {
        return Ok((
            EXTERNAL_DOCKERFILE.into(),
            Some(inline.clone().into_bytes()),
        ));
    }
    let given = spec.dockerfile.as_deref().unwrap_or("Dockerfile");
    let path = context.join(given);
    let normal: std::path::PathBuf = path.components().collect();
    match normal.strip_prefix(context) {
        Ok(rel) if !given.contains("..") => Ok((rel.to_string_lossy().into_owned(), None)),
        _ => {
            let content = std::fs::read(&path)
                .with_context(|| format!("reading the Dockerfile {}", path.display()))?;
            Ok((EXTERNAL_DOCKERFILE.into(), Some(content)))
        }
    }
}

/// Every entry under `dir` (`rel` inside the context) that is sent, in name order.
fn walk(
    dir: &Path,
    rel: &str,
    ignore: &Ignore,
    always: &[&str],
    out: &mut Vec<Entry>,
) -> anyhow::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = std::fs::symlink_metadata(entry.path())?;
        let excluded = ignore.excluded(&path) && !always.contains(&path.as_str());
        let ft = meta.file_type();
        if ft.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                out.push(entry_of(&path, &meta, Kind::Dir));
            }
            walk(&entry.path(), &path, ignore, always, out)?;
            continue;
        }
        if excluded {
            continue;
        }
        let kind = if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            Kind::Symlink(target.to_string_lossy().into_owned())
        } else if ft.is_file() {
            Kind::File(std::fs::read(entry.path()).with_context(|| format!("reading {path}"))?)
        } else {
            continue; // sockets, FIFOs and devices are not sent, as Docker's CLI does
        };
        out.push(entry_of(&path, &meta, kind));
    }
    Ok(())
}

fn entry_of(path: &str, meta: &std::fs::Metadata, kind: Kind) -> Entry {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Entry {
        path: path.to_string(),
        mode: meta.permissions().mode() & 0o7777,
        mtime,
        kind,
    }
}

/// `sha256:` over each entry's path, kind, mode and content, then the content options.
fn digest(entries: &[Entry], spec: &BuildSpec) -> String {
    let mut h = Sha256::new();
    for e in entries {
        h.update(e.path.as_bytes());
        let (kind, body) = match &e.kind {
            Kind::Dir => ("d", String::new()),
            Kind::File(c) => ("f", hex(&Sha256::digest(c))),
            Kind::Symlink(t) => ("l", t.clone()),
        };
        h.update(format!("\0{kind}\0{:o}\0{body}\n", e.mode).as_bytes());
    }
    h.update(b"\0options\0");
    h.update(spec.content_options().to_string().as_bytes());
    format!("sha256:{}", hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One tar entry (ustar, with a GNU long-name record before names over 100 bytes).
fn write_entry(tar: &mut Vec<u8>, e: &Entry) {
    let (flag, data, link): (u8, &[u8], &str) = match &e.kind {
        Kind::Dir => (b'5', &[], ""),
        Kind::File(c) => (b'0', c, ""),
        Kind::Symlink(t) => (b'2', &[], t),
    };
    let name = match e.kind {
        Kind::Dir => format!("{}/", e.path),
        _ => e.path.clone(),
    };
    if link.len() > 100 {
        long_record(tar, b'K', link);
    }
    if name.len() > 100 {
        long_record(tar, b'L', &name);
    }
    tar.extend_from_slice(&header(
        &name,
        e.mode,
        data.len() as u64,
        e.mtime,
        flag,
        link,
    ));
    pad_data(tar, data);
}

fn long_record(tar: &mut Vec<u8>, flag: u8, text: &str) {
    let mut data = text.as_bytes().to_vec();
    data.push(0);
    tar.extend_from_slice(&header("././@LongLink", 0, data.len() as u64, 0, flag, ""));
    pad_data(tar, &data);
}

fn pad_data(tar: &mut Vec<u8>, data: &[u8]) {
    tar.extend_from_slice(data);
    let rem = data.len() % 512;
    if rem != 0 {
        tar.extend(std::iter::repeat_n(0u8, 512 - rem));
    }
}

fn header(name: &str, mode: u32, size: u64, mtime: u64, flag: u8, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, bytes: &[u8]| {
        let n = bytes.len().min(len);
        h[at..at + n].copy_from_slice(&bytes[..n]);
    };
    let octal = |v: u64, len: usize| format!("{v:0w$o}\0", w = len - 1).into_bytes();
    put(&mut h, 0, 100, name.as_bytes());
    put(&mut h, 100, 8, &octal(u64::from(mode), 8));
    put(&mut h, 108, 8, &octal(0, 8));
    put(&mut h, 116, 8, &octal(0, 8));
    put(&mut h, 124, 12, &octal(size, 12));
    put(&mut h, 136, 12, &octal(mtime, 12));
    h[148..156].copy_from_slice(b"        ");
    h[156] = flag;
    put(&mut h, 157, 100, link.as_bytes());
    put(&mut h, 257, 8, b"ustar\x0000");
    put(&mut h, 265, 32, b"root");
    put(&mut h, 297, 32, b"root");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("capstan-ctx-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn write(&self, rel: &str, text: &str) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The paths in a tar, read back with its headers.
    fn paths(tar: &[u8]) -> Vec<String> {
        let mut out = vec![];
        let mut at = 0;
        let mut long = None;
        while at + 512 <= tar.len() && tar[at] != 0 {
            let h = &tar[at..at + 512];
            let size_text = std::str::from_utf8(&h[124..135]).unwrap();
            let size = usize::from_str_radix(size_text, 8).unwrap();
            let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
            let mut name = String::from_utf8(h[..end].to_vec()).unwrap();
            let data = &tar[at + 512..at + 512 + size];
            at += 512 + size.div_ceil(512) * 512;
            if h[156] == b'L' {
                long = Some(String::from_utf8(data[..data.len() - 1].to_vec()).unwrap());
                continue;
            }
            if let Some(l) = long.take() {
                name = l;
            }
            out.push(name);
        }
        out
    }

    #[test]
    fn dockerignore_is_honoured_but_the_dockerfile_and_itself_are_always_sent() {
        let d = Dir::new("ignore");
        d.write("Dockerfile", "FROM scratch\n");
        d.write(".dockerignore", "*\n!app\n");
        d.write("app/main.sh", "echo hi\n");
        d.write("secret.txt", "no\n");
        let long = format!("app/{}", "x".repeat(120));
        d.write(&long, "long\n");
        let p = pack(&d.0, &BuildSpec::default()).unwrap();
        let got = paths(&p.tar);
        assert_eq!(
            got,
            vec![
                ".dockerignore".to_string(),
                "Dockerfile".into(),
                "app/".into(),
                "app/main.sh".into(),
                long,
            ]
        );
        assert_eq!(p.files, 4);
    }

    #[test]
    fn the_digest_depends_on_content_modes_and_options_not_on_times_or_the_folder() {
        let a = Dir::new("digest-a");
        let b = Dir::new("digest-b");
        for d in [&a, &b] {
            d.write("Dockerfile", "FROM scratch\nCOPY . /\n");
            d.write("x/y.txt", "same\n");
        }
        let spec = BuildSpec::default();
        let da = pack(&a.0, &spec).unwrap().digest;
        assert_eq!(da, pack(&b.0, &spec).unwrap().digest);
        let f = std::fs::File::options()
            .write(true)
            .open(b.0.join("x/y.txt"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(da, pack(&b.0, &spec).unwrap().digest, "times do not count");
        b.write("x/y.txt", "changed\n");
        assert_ne!(da, pack(&b.0, &spec).unwrap().digest);
        let mut perms = std::fs::metadata(a.0.join("x/y.txt"))
            .unwrap()
            .permissions();
        perms.set_mode(0o755);
        std::fs::set_permissions(a.0.join("x/y.txt"), perms).unwrap();
        let da2 = pack(&a.0, &spec).unwrap().digest;
        assert_ne!(da, da2, "modes count");
        let with_arg = BuildSpec {
            args: [("V".to_string(), "2".to_string())].into(),
            ..Default::default()
        };
        assert_ne!(da2, pack(&a.0, &with_arg).unwrap().digest, "options count");
    }

    #[test]
    fn an_inline_dockerfile_is_sent_under_its_own_name_and_a_missing_one_is_an_error() {
        let d = Dir::new("inline");
        d.write("a.txt", "a\n");
        let inline = BuildSpec {
            dockerfile_inline: Some("FROM scratch\n".into()),
            ..Default::default()
        };
        let p = pack(&d.0, &inline).unwrap();
        assert_eq!(p.dockerfile, EXTERNAL_DOCKERFILE);
        assert!(paths(&p.tar).contains(&EXTERNAL_DOCKERFILE.to_string()));
        let err = pack(&d.0, &BuildSpec::default()).err().unwrap().to_string();
        assert!(err.contains("Dockerfile"), "{err}");
    }
}
