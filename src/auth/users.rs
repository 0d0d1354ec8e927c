//! Password logins: the users file (`[auth] users_file`) and its hashes.
//!
//! One user per line, `name:hash[:role,role...]`, the layout of an htpasswd file (so
//! `htpasswd -nbB alice secret` makes a valid bcrypt line). Blank lines and lines starting
//! with `#` are ignored. The hash is an argon2 PHC string (`$argon2id$v=19$m=...`) or a bcrypt
//! hash (`$2b$`, `$2y$`, `$2a$`); `sockjs-gateway hash-password` makes argon2id ones. A file
//! that does not parse is refused at start with the line number.
//!
//! The file is re-read when it changes (its modification time is looked at, at most every
//! [`RELOAD_CHECK`], by the next login), so users can be added or removed without a restart;
//! a changed file that does not parse is logged and the users already loaded stay.
//!
//! Verifying a hash costs tens of milliseconds of CPU on purpose, so it never runs on an
//! async worker: [`UserStore::check`] waits for one of a bounded number of permits, then runs
//! on the blocking pool. A burst of CONNECTs queues there instead of stalling the runtime.
//! Unknown users are checked against a dummy hash, so the answer takes as long either way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use tokio::sync::Semaphore;

use crate::session::Principal;

/// How often a login may look at the users file's modification time.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The hash schemes a users file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashScheme {
    /// argon2 (id, i or d), as a PHC string.
    Argon2,
    /// bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`).
    Bcrypt,
}

/// A problem with the users file, at a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct UsersFileError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

/// Why a login failed; the text goes into ERROR `Authentication failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Unknown user or wrong password (deliberately not told apart).
    #[error("unknown user or wrong password")]
    BadCredentials,
    /// The check could not run (the blocking pool is gone: the server is stopping).
    #[error("the password check could not run: {0}")]
    Unavailable(String),
}

/// One user of the file.
#[derive(Debug, Clone)]
struct UserEntry {
    /// The stored hash.
    hash: String,
    /// Its scheme.
    scheme: HashScheme,
    /// Role names for authorization rules.
    roles: Vec<String>,
}

/// The users loaded from the file, and when the file was last looked at.
#[derive(Debug)]
struct Loaded {
    /// Users by name.
    users: HashMap<String, UserEntry>,
    /// The file's modification time when it was read.
    modified: Option<SystemTime>,
    /// When a login last looked at the file.
    checked: Instant,
}

/// The users file, verified off the async workers.
#[derive(Debug)]
pub struct UserStore {
    /// The file, for reloads.
    path: PathBuf,
    /// What was loaded last.
    loaded: RwLock<Loaded>,
    /// Bounds the password checks running at once.
    workers: Arc<Semaphore>,
}

impl UserStore {
    /// Load `path`; `workers` password checks may run at once (at least one).
    pub fn load(path: &Path, workers: usize) -> Result<UserStore, String> {
        let (users, modified) = read_users(path)?;
        Ok(UserStore {
            path: path.to_path_buf(),
            loaded: RwLock::new(Loaded {
                users,
                modified,
                checked: Instant::now(),
            }),
            workers: Arc::new(Semaphore::new(workers.max(1))),
        })
    }

    /// How many users are loaded.
    pub fn len(&self) -> usize {
        self.read().users.len()
    }

    /// Whether no user is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is a user of the file (as loaded now).
    pub fn contains(&self, name: &str) -> bool {
        self.read().users.contains_key(name)
    }

    /// Check a login off the async workers: wait for a permit, then verify on the blocking
    /// pool. The permit is held by the blocking work itself, so an abandoned login (the client
    /// went away) never lets more checks run at once than allowed.
    pub async fn check(
        self: &Arc<Self>,
        name: String,
        password: String,
    ) -> Result<Principal, PasswordError> {
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PasswordError::Unavailable(e.to_string()))?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            store.verify(&name, &password)
        })
        .await
        .map_err(|e| PasswordError::Unavailable(e.to_string()))?
    }

    /// Verify a login on the calling thread (blocking: tens of milliseconds).
    pub fn verify(&self, name: &str, password: &str) -> Result<Principal, PasswordError> {
        self.reload_if_changed();
        let entry = self.read().users.get(name).cloned();
        let Some(entry) = entry else {
            let _ = verify_hash(HashScheme::Argon2, dummy_hash(), password);
            return Err(PasswordError::BadCredentials);
        };
        if !verify_hash(entry.scheme, &entry.hash, password) {
            return Err(PasswordError::BadCredentials);
        }
        Ok(Principal {
            name: name.to_owned(),
            roles: entry.roles,
            expires_at: None,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        match self.loaded.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Re-read the file when its modification time changed (looked at every
    /// [`RELOAD_CHECK`] at most).
    fn reload_if_changed(&self) {
        let modified = {
            let loaded = self.read();
            if loaded.checked.elapsed() < RELOAD_CHECK {
                return;
            }
            loaded.modified
        };
        let now_modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut loaded = match self.loaded.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        loaded.checked = Instant::now();
        if now_modified == modified {
            return;
        }
        match read_users(&self.path) {
            Ok((users, modified)) => {
                tracing::info!(file = %self.path.display(), users = users.len(), "users file reloaded");
                loaded.users = users;
                loaded.modified = modified;
            }
            Err(err) => {
                tracing::warn!(file = %self.path.display(), error = %err, "users file changed but cannot be used; keeping the users loaded before");
                loaded.modified = now_modified;
            }
        }
    }
}

/// Read and parse the users file, with its modification time.
fn read_users(path: &Path) -> Result<(HashMap<String, UserEntry>, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let users = parse_users(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((users, modified))
}

/// Parse a users file's text.
fn parse_users(text: &str) -> Result<HashMap<String, UserEntry>, UsersFileError> {
    let mut users = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fail = |message: String| UsersFileError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = trimmed.splitn(3, ':');
        let name = fields.next().unwrap_or_default();
        let Some(hash) = fields.next() else {
            return Err(fail(format!(
                "expected name:hash[:roles], found no ':' after {name:?}"
            )));
        };
        check_user_name(name).map_err(fail)?;
        let scheme = hash_scheme(hash).ok_or_else(|| {
            fail(format!(
                "the hash of {name:?} is neither argon2 ($argon2id$...) nor bcrypt ($2b$...); \
                 make one with `sockjs-gateway hash-password`"
            ))
        })?;
        check_hash(scheme, hash).map_err(|e| fail(format!("the hash of {name:?} {e}")))?;
        let roles = fields
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                if r.contains(char::is_whitespace) {
                    Err(fail(format!("role {r:?} of {name:?} contains whitespace")))
                } else {
                    Ok(r.to_owned())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let entry = UserEntry {
            hash: hash.to_owned(),
            scheme,
            roles,
        };
        if users.insert(name.to_owned(), entry).is_some() {
            return Err(fail(format!("user {name:?} is listed twice")));
        }
    }
    Ok(users)
}

/// User names become user destinations (`/user/{name}/...`), so they follow those rules.
fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the user name is empty".into());
    }
    if name.contains(char::is_whitespace) || name.contains('%') {
        return Err(format!(
            "user name {name:?} must not contain whitespace or '%'"
        ));
    }
    Ok(())
}

/// The scheme a stored hash is in, by its prefix.
fn hash_scheme(hash: &str) -> Option<HashScheme> {
    if ["$argon2id$", "$argon2i$", "$argon2d$"]
        .iter()
        .any(|p| hash.starts_with(p))
    {
        Some(HashScheme::Argon2)
    } else if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p))
    {
        Some(HashScheme::Bcrypt)
    } else {
        None
    }
}

/// Whether a stored hash is well formed (checked at load, so a typo fails the start).
fn check_hash(scheme: HashScheme, hash: &str) -> Result<(), String> {
    match scheme {
        HashScheme::Argon2 => {
            let parsed =
                PasswordHash::new(hash).map_err(|e| format!("is not a valid PHC string: {e}"))?;
            argon2::Params::try_from(&parsed)
                .map(|_| ())
                .map_err(|e| format!("has unusable argon2 parameters: {e}"))
        }
        HashScheme::Bcrypt => hash
            .parse::<bcrypt::HashParts>()
            .map(|_| ())
            .map_err(|e| format!("is not a valid bcrypt hash: {e}")),
    }
}

/// Whether `password` matches `hash` (constant-time comparison inside both libraries).
fn verify_hash(scheme: HashScheme, hash: &str, password: &str) -> bool {
    match scheme {
        HashScheme::Argon2 => PasswordHash::new(hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        }),
        HashScheme::Bcrypt => bcrypt::verify(password, hash).unwrap_or(false),
    }
}

/// An argon2id hash of a random password with the default parameters, made once, that
/// unknown users are checked against.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: String = (0..32)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        hash_password(&random, HashScheme::Argon2).unwrap_or_default()
    })
}

/// Hash a password for the users file: argon2id with the library's defaults (the OWASP
/// recommendation: 19 MiB, 2 passes), or bcrypt with cost 12.
pub fn hash_password(password: &str, scheme: HashScheme) -> Result<String, String> {
    match scheme {
        HashScheme::Argon2 => Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash: PasswordHash| hash.to_string())
            .map_err(|e| format!("argon2 hashing failed: {e}")),
        HashScheme::Bcrypt => bcrypt::non_truncating_hash(password, bcrypt::DEFAULT_COST)
            .map_err(|e| format!("bcrypt hashing failed: {e}")),
    }
}

/// `sockjs-gateway hash-password`: read a password (from the terminal without echo, asked
/// twice; or the first line of a pipe) and return the hash, or a whole users-file line when
/// `user` is given.
pub fn hash_password_command(
    scheme: HashScheme,
    user: Option<&str>,
    roles: Option<&str>,
) -> Result<String, String> {
    if let Some(name) = user {
        check_user_name(name)?;
    }
    let roles: Vec<&str> = roles
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    if let Some(role) = roles.iter().find(|r| r.contains(char::is_whitespace)) {
        return Err(format!("role {role:?} contains whitespace"));
    }
    let password = read_password()?;
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let hash = hash_password(&password, scheme)?;
    Ok(match user {
        Some(name) if roles.is_empty() => format!("{name}:{hash}"),
        Some(name) => format!("{name}:{hash}:{}", roles.join(",")),
        None => hash,
    })
}

/// The password to hash: asked twice on a terminal, or the first line of standard input.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bcrypt_line(name: &str, password: &str) -> String {
        format!("{name}:{}", bcrypt::hash(password, 4).unwrap())
    }

    #[test]
    fn parses_argon2_and_bcrypt_lines_with_roles_comments_and_blanks() {
        let argon = hash_password("s3cret", HashScheme::Argon2).unwrap();
        let text = format!(
            "# users\n\nalice:{argon}:admin, trader\n{}\ncarol:{}:\n",
            bcrypt_line("bob", "hunter2"),
            bcrypt::hash("x", 4).unwrap()
        );
        let users = parse_users(&text).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users["alice"].roles, ["admin", "trader"]);
        assert_eq!(users["alice"].scheme, HashScheme::Argon2);
        assert_eq!(users["bob"].scheme, HashScheme::Bcrypt);
        assert!(users["carol"].roles.is_empty());
        assert!(verify_hash(
            HashScheme::Argon2,
            &users["alice"].hash,
            "s3cret"
        ));
        assert!(!verify_hash(
            HashScheme::Argon2,
            &users["alice"].hash,
            "s3cres"
        ));
        assert!(verify_hash(
            HashScheme::Bcrypt,
            &users["bob"].hash,
            "hunter2"
        ));
        assert!(!verify_hash(
            HashScheme::Bcrypt,
            &users["bob"].hash,
            "hunter3"
        ));
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let cases = [
            ("alice\n", "line 1", "no ':'"),
            ("# c\nalice:plain\n", "line 2", "neither argon2"),
            ("alice:$argon2id$v=19$garbage\n", "line 1", "PHC"),
            ("alice:$2b$04$short\n", "line 1", "bcrypt"),
            (":$2b$04$x\n", "line 1", "empty"),
            ("a b:$2b$04$x\n", "line 1", "whitespace"),
            ("a%2Fb:$2b$04$x\n", "line 1", "'%'"),
        ];
        for (text, line, needle) in cases {
            let err = parse_users(text).unwrap_err().to_string();
            assert!(
                err.starts_with(line) && err.contains(needle),
                "{text:?}: {err}"
            );
        }
        let twice = format!("{}\n{}\n", bcrypt_line("a", "x"), bcrypt_line("a", "y"));
        let err = parse_users(&twice).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("twice"), "{err}");
        let spaced = format!("{}: admin ops\n", bcrypt_line("a", "x"));
        assert!(
            parse_users(&spaced)
                .unwrap_err()
                .to_string()
                .contains("whitespace")
        );
    }

    #[test]
    fn verify_reloads_a_changed_file_and_keeps_users_on_a_broken_one() {
        let dir = std::env::temp_dir().join(format!("users-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        std::fs::write(&path, bcrypt_line("alice", "one") + "\n").unwrap();
        let store = UserStore::load(&path, 1).unwrap();
        assert_eq!(store.verify("alice", "one").unwrap().name, "alice");
        assert_eq!(
            store.verify("alice", "two").unwrap_err(),
            PasswordError::BadCredentials
        );
        assert_eq!(
            store.verify("nobody", "one").unwrap_err(),
            PasswordError::BadCredentials
        );
        std::fs::write(&path, bcrypt_line("bob", "two") + ":ops\n").unwrap();
        bump_mtime(&path);
        store.loaded.write().unwrap().checked = Instant::now() - RELOAD_CHECK;
        let bob = store.verify("bob", "two").unwrap();
        assert_eq!(bob.roles, ["ops"]);
        assert!(store.verify("alice", "one").is_err(), "alice was removed");
        std::fs::write(&path, "bob:plaintext\n").unwrap();
        bump_mtime(&path);
        store.loaded.write().unwrap().checked = Instant::now() - RELOAD_CHECK;
        assert!(
            store.verify("bob", "two").is_ok(),
            "a broken file keeps the old users"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Make sure the modification time differs even on coarse file systems.
    fn bump_mtime(path: &Path) {
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }

    #[test]
    fn hash_schemes_are_told_by_prefix() {
        assert_eq!(hash_scheme("$2y$04$abc"), Some(HashScheme::Bcrypt));
        assert_eq!(hash_scheme("$argon2id$v=19$m=1"), Some(HashScheme::Argon2));
        assert_eq!(hash_scheme("{SHA}abc"), None);
    }

    #[tokio::test]
    async fn check_runs_on_the_blocking_pool() {
        let dir = std::env::temp_dir().join(format!("users-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        std::fs::write(&path, bcrypt_line("alice", "pw") + "\n").unwrap();
        let store = Arc::new(UserStore::load(&path, 1).unwrap());
        let (a, b) = tokio::join!(
            store.check("alice".into(), "pw".into()),
            store.check("alice".into(), "nope".into())
        );
        assert_eq!(a.unwrap().name, "alice");
        assert_eq!(b.unwrap_err(), PasswordError::BadCredentials);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
