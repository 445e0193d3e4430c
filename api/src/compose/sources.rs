//! The client's side of `secrets` and `configs`: a `file:` source is read (relative to the
//! project folder) and an `environment:` source looked up in the client's environment; both
//! become `content:`, which is what the server accepts. The server never reads the client's
//! files.

use super::resolve::Resolver;
use super::yaml::{Mapping, Value};
use crate::files::FileKind;

impl Resolver<'_, '_> {
    /// Replaces every `file:` and `environment:` source of the top-level `secrets` and
    /// `configs` with `content:`.
    pub(super) fn file_sources(&mut self, doc: &mut Value) {
        for kind in [FileKind::Secret, FileKind::Config] {
            let Some(objects) = doc.get_mut(kind.key()).and_then(Value::as_mapping_mut) else {
                continue;
            };
            for (name, obj) in objects.iter_mut() {
                let path = format!("{}.{}", kind.key(), name.scalar_text().unwrap_or_default());
                if let Some(obj) = obj.as_mapping_mut() {
                    self.file_source(kind, &path, obj);
                }
            }
        }
    }

    fn file_source(&mut self, kind: FileKind, path: &str, obj: &mut Mapping) {
        if kind == FileKind::Secret && obj.get("content").is_some() {
            self.err(
                format!("{path}.content"),
                "a secret's value comes from `file` or `environment` (`content` is for configs)",
            );
            return;
        }
        let value = if let Some(file) = obj.remove("file") {
            let Some(rel) = file.as_str() else {
                self.err(format!("{path}.file"), "must be a path");
                return;
            };
            let full = self.working_dir().join(rel);
            match (self.project.load)(&full) {
                Ok(Some(text)) => text,
                Ok(None) => {
                    self.err(
                        format!("{path}.file"),
                        format!("{} does not exist", full.display()),
                    );
                    return;
                }
                Err(e) => {
                    self.err(
                        format!("{path}.file"),
                        format!("cannot read {}: {e}", full.display()),
                    );
                    return;
                }
            }
        } else if let Some(var) = obj.remove("environment") {
            let name = var.scalar_text().unwrap_or_default();
            match self.var(&name) {
                Some(v) => v,
                None => {
                    self.err(
                        format!("{path}.environment"),
                        format!(
                            "variable {name:?} is not set in the environment of `capstan apply`"
                        ),
                    );
                    return;
                }
            }
        } else {
            return;
        };
        obj.insert("content", Value::String(value));
    }
}

#[cfg(test)]
mod tests {
    use super::super::resolve::tests::project_files;
    use crate::compose::parse_stack;

    #[test]
    fn file_and_environment_sources_are_read_on_the_client_and_sent_as_content() {
        let resolved = project_files(
            &[
                (
                    "compose.yaml",
                    "services: {web: {image: x, secrets: [pw, tok], configs: [conf]}}\nsecrets: {pw: {file: ./pw.txt}, tok: {environment: TZ}}\nconfigs: {conf: {content: \"tag=${TAG}\"}}",
                ),
                ("pw.txt", "hunter2\n"),
            ],
            &[],
        )
        .unwrap();
        let text = serde_json::to_string(&resolved.doc).unwrap();
        let spec = parse_stack("s", &text).unwrap();
        assert_eq!(spec.secrets["pw"].content.0, b"hunter2\n");
        assert_eq!(spec.secrets["tok"].content.0, b"Europe/Paris");
        assert_eq!(spec.configs["conf"].content.0, b"tag=2");
    }

    #[test]
    fn a_missing_file_an_unset_variable_or_secret_content_is_an_error() {
        let errs = project_files(
            &[(
                "compose.yaml",
                "services: {web: {image: x}}\nsecrets: {a: {file: ./nope}, b: {environment: NOPE}, c: {content: x}}",
            )],
            &[],
        )
        .unwrap_err()
        .errors;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "secrets.a.file",
                "secrets.b.environment",
                "secrets.c.content"
            ]
        );
    }
}
