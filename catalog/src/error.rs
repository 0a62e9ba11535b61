use std::fmt;
use std::path::PathBuf;

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog folder (or a file in it) could not be read.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The folder holds no `*.yaml` / `*.yml` definitions.
    #[error("no feature service definitions (*.yaml) in {0}")]
    Empty(PathBuf),
    /// One or more definitions are wrong; every problem found is listed.
    #[error("{}", Listed(.0))]
    Definitions(Vec<DefinitionError>),
    /// `registry.lock.json` exists but cannot be read or parsed.
    #[error(transparent)]
    Lock(#[from] crate::LockError),
    /// A service name that the catalog does not define.
    #[error("unknown feature service `{0}`")]
    UnknownService(String),
}

/// One problem in one definition: the file, the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {field}: {message}", file.display())]
pub struct DefinitionError {
    pub file: PathBuf,
    /// A YAML path such as `columns[2].type`, or `(file)` for the whole file.
    pub field: String,
    pub message: String,
}

struct Listed<'a>(&'a [DefinitionError]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => one.fmt(f),
            many => {
                write!(f, "{} definition errors:", many.len())?;
                for e in many {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}
