//! Which API key the command line sends: `--api-key`, then `MILLRACE_API_KEY`, then the local
//! stack's bootstrap key in `.millrace/admin.key` (`MILLRACE_DATA_DIR/admin.key` when that is
//! set; else the nearest `.millrace/` from the working directory up, as `make up` made it).

use std::path::{Path, PathBuf};

use crate::api::Failure;

/// The file `make up`/`make run` keep the local stack's admin key in, under its data folder.
const KEY_FILE: &str = "admin.key";

/// The key to send, if any is given or found (a call without one is answered 401, which says so).
/// `given` is `--api-key`, or `MILLRACE_API_KEY` when the flag is absent (clap reads both).
pub fn resolve(given: Option<String>) -> Result<Option<String>, Failure> {
    if let Some(key) = given.map(|key| key.trim().to_owned()).filter(|key| !key.is_empty()) {
        return Ok(Some(key));
    }
    let Some(path) = key_file() else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|err| Failure::Usage(format!("cannot read the API key in {}: {err}", path.display())))?;
    Ok(Some(text.trim().to_owned()).filter(|key| !key.is_empty()))
}

fn key_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MILLRACE_DATA_DIR") {
        let path = Path::new(&dir).join(KEY_FILE);
        return path.is_file().then_some(path);
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().map(|dir| dir.join(".millrace").join(KEY_FILE)).find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_key_is_taken_trimmed() {
        let key = resolve(Some(" mr_given\n".into())).ok().flatten();
        assert_eq!(key.as_deref(), Some("mr_given"));
    }
}
