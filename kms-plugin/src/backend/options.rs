//! The options a backend reads: declared once, in the backend's row of the
//! [`registry`](super::registry), and offered everywhere they apply.
//!
//! A backend declares each option with an [`OptionSpec`]. Connection
//! options ([`Scope::Connect`]: where the TPM is, which token, which
//! server) become flags of `serve` and of every `key` command, and keys of
//! `serve`'s TOML file; creation options ([`Scope::Create`]: PCR binding,
//! shareability) become flags of `key init|add|rotate`. Values are strings
//! until the backend parses them; a value a backend does not use (`--pcrs`
//! with the software backend) is refused, naming the backends that use it.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use super::registry::{self, BackendRow};

/// Where an option is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// How to reach the backend: `serve` and every `key` command.
    Connect,
    /// How to make a new key: `key init|add|rotate`.
    Create,
}

/// What kind of value an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--name VALUE`.
    Value,
    /// `--name` (true) or `--name=BOOL`.
    Switch,
}

/// One option a backend reads.
#[derive(Debug)]
pub(crate) struct OptionSpec {
    /// The flag and config-file key, kebab-case (`tcti`, `pkcs11-module`).
    pub name: &'static str,
    /// The placeholder in `--help`.
    pub value_name: &'static str,
    /// The `--help` text.
    pub help: &'static str,
    /// An environment variable read when neither flag nor file sets it.
    pub env: Option<&'static str>,
    /// Where it is offered.
    pub scope: Scope,
    /// Value or switch.
    pub kind: Kind,
}

/// The scope of an [`Options`] type (a type parameter, so `serve` and
/// `key rotate` flatten different sets of flags).
pub(crate) trait ScopeOf: Send + Sync + 'static {
    /// The scope.
    const SCOPE: Scope;
}

/// Marker: connection options.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Connect;
impl ScopeOf for Connect {
    const SCOPE: Scope = Scope::Connect;
}

/// Marker: key-creation options.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Create;
impl ScopeOf for Create {
    const SCOPE: Scope = Scope::Create;
}

/// Backend options of one scope, as given (flags, then the file, then the
/// environment). A clap `Args` type: flatten it into a command.
#[derive(Clone, Debug)]
pub(crate) struct Options<S: ScopeOf> {
    values: BTreeMap<&'static str, String>,
    /// Options whose value came from the environment only.
    from_env: BTreeSet<&'static str>,
    _scope: PhantomData<S>,
}

impl<S: ScopeOf> Default for Options<S> {
    fn default() -> Self {
        Options {
            values: BTreeMap::new(),
            from_env: BTreeSet::new(),
            _scope: PhantomData,
        }
    }
}

/// `serve`'s and the `key` commands' connection options.
pub(crate) type ConnectOptions = Options<Connect>;
/// `key init|add|rotate`'s creation options.
pub(crate) type CreateOptions = Options<Create>;

/// Every option of `scope`, each name once, in table order.
pub(crate) fn specs(scope: Scope) -> Vec<&'static OptionSpec> {
    let mut out: Vec<&'static OptionSpec> = Vec::new();
    for row in registry::BACKENDS {
        for spec in row.options {
            if spec.scope == scope && !out.iter().any(|s| s.name == spec.name) {
                out.push(spec);
            }
        }
    }
    out
}

/// The backends that read option `name`, for messages.
fn users(name: &str) -> Vec<&'static str> {
    registry::BACKENDS
        .iter()
        .filter(|r| r.options.iter().any(|o| o.name == name))
        .map(|r| r.name)
        .collect()
}

impl<S: ScopeOf> Options<S> {
    /// The value of option `name`, if given (flag, file or environment).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A switch: `None` when not given, else its boolean value.
    pub(crate) fn switch(&self, name: &str) -> Result<Option<bool>, String> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(format!(
                "{name}={other:?} is not valid: expected true or false"
            )),
        }
    }

    /// Sets option `name`.
    #[cfg(test)]
    pub(crate) fn set(&mut self, name: &str, value: impl Into<String>) -> Result<(), String> {
        let spec = specs(S::SCOPE)
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("unknown option {name:?}"))?;
        self.values.insert(spec.name, value.into());
        Ok(())
    }

    /// Whether `name` is one of this scope's options.
    pub(crate) fn knows(name: &str) -> bool {
        specs(S::SCOPE).iter().any(|s| s.name == name)
    }

    /// Fills options not given yet from `file` (the TOML table of `serve
    /// --config`, keys already known to be options) and then from their
    /// environment variables.
    pub(crate) fn with_fallbacks(mut self, file: &BTreeMap<String, String>) -> Self {
        for spec in specs(S::SCOPE) {
            if self.values.contains_key(spec.name) {
                continue;
            }
            if let Some(v) = file.get(spec.name) {
                self.values.insert(spec.name, v.clone());
            } else if let Some(v) = spec.env.and_then(|e| std::env::var(e).ok()) {
                self.values.insert(spec.name, v);
                self.from_env.insert(spec.name);
            }
        }
        self
    }

    /// Refuses options the backend `row` does not read, naming who does.
    /// Options that came only from the environment are not refused (`TCTI`
    /// may be set for other tools).
    pub(crate) fn check_applies(&self, row: &BackendRow) -> Result<(), String> {
        for name in self.values.keys() {
            if self.from_env.contains(name) || row.options.iter().any(|o| o.name == *name) {
                continue;
            }
            return Err(format!(
                "--{name} does not apply to backend {}: it is an option of {}",
                row.name,
                users(name).join(", ")
            ));
        }
        Ok(())
    }
}

impl<S: ScopeOf> clap::FromArgMatches for Options<S> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut o = Options::default();
        o.update_from_arg_matches(m)?;
        Ok(o)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for spec in specs(S::SCOPE) {
            if let Ok(Some(v)) = m.try_get_one::<String>(spec.name) {
                self.values.insert(spec.name, v.clone());
            }
        }
        Ok(())
    }
}

impl<S: ScopeOf> clap::Args for Options<S> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        specs(S::SCOPE).into_iter().fold(cmd, |cmd, spec| {
            let mut arg = clap::Arg::new(spec.name)
                .long(spec.name)
                .value_name(spec.value_name)
                .help(spec.help);
            if spec.kind == Kind::Switch {
                arg = arg
                    .num_args(0..=1)
                    .default_missing_value("true")
                    .value_parser(["true", "false"]);
            }
            cmd.arg(arg)
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        connect: ConnectOptions,
        #[command(flatten)]
        create: CreateOptions,
    }

    #[test]
    fn flags_come_from_the_backend_rows() {
        let c = Cmd::try_parse_from([
            "x",
            "--tcti",
            "swtpm:host=127.0.0.1,port=1",
            "--pcrs",
            "sha256:7",
            "--shareable",
        ])
        .unwrap();
        assert_eq!(c.connect.get("tcti"), Some("swtpm:host=127.0.0.1,port=1"));
        assert_eq!(c.create.get("pcrs"), Some("sha256:7"));
        assert_eq!(c.create.switch("shareable"), Ok(Some(true)));
        let c = Cmd::try_parse_from(["x", "--shareable=false"]).unwrap();
        assert_eq!(c.create.switch("shareable"), Ok(Some(false)));
        assert!(Cmd::try_parse_from(["x", "--shareable=maybe"]).is_err());
        assert!(Cmd::try_parse_from(["x", "--no-such-option", "1"]).is_err());
    }

    #[test]
    fn options_a_backend_does_not_read_are_refused() {
        let mut o = CreateOptions::default();
        o.set("pcrs", "sha256:7").unwrap();
        let software = registry::row("software").unwrap();
        let e = o.check_applies(software).unwrap_err();
        assert!(
            e.contains("--pcrs does not apply to backend software") && e.contains("tpm-sealed"),
            "{e}"
        );
        assert!(
            o.check_applies(registry::row("tpm-sealed").unwrap())
                .is_ok()
        );
        assert!(o.set("nope", "1").is_err());
    }
}
