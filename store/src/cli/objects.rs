//! apply, get, list, delete, inspect: kubectl-style commands on Secrets.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use super::GlobalArgs;
use super::open::{Access, open_store};
use crate::secret::{self, ManifestOptions, OutputFormat};
use crate::store::StoreError;

/// `apply` flags.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Manifest file, or - for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// Namespace for Secrets that name none; Secrets naming another are refused.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// `get` flags.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The Secret's name.
    name: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Output: table (default), yaml, json or name.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

/// `list` flags.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Namespace.
    #[arg(
        short = 'n',
        long,
        default_value = "default",
        conflicts_with = "all_namespaces"
    )]
    namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output: table (default), yaml, json or name.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

/// `delete` flags.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The Secret's name.
    name: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

/// `inspect` flags.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The Secret's name.
    name: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Output: text (default) or json.
    #[arg(short = 'o', long, default_value = "text")]
    output: String,
}

fn output_format(s: &str) -> anyhow::Result<OutputFormat> {
    s.parse::<OutputFormat>()
        .map_err(|e| anyhow::anyhow!("output={s:?} is not valid: {e}"))
}

/// kubectl's wording for an error from the server.
fn server_error(e: &StoreError) -> String {
    let reason = match e {
        StoreError::NotFound { .. } => "NotFound",
        StoreError::Conflict { .. } => "Conflict",
        StoreError::Invalid(_) | StoreError::ResourceVersionOnCreate(..) => "Invalid",
        _ => "InternalError",
    };
    format!("Error from server ({reason}): {e}")
}

pub(super) fn apply(g: &GlobalArgs, a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let mut text = crate::wipe::Wiped::new(String::new());
    if a.file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        std::fs::File::open(&a.file)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.file.display()))?;
    }
    let opts = ManifestOptions {
        default_namespace: a.namespace.clone().unwrap_or_else(|| "default".into()),
        enforce_namespace: a.namespace.is_some(),
    };
    let secrets = secret::parse_manifests_with(&text, &opts)
        .map_err(|e| anyhow::anyhow!("error: {}: {e}", a.file.display()))?;
    let store = open_store(g, Access::Write)?;
    let mut failed = 0;
    for s in secrets {
        let name = s.metadata.name.clone();
        match store.apply(s) {
            Ok((what, _, warnings)) => {
                for w in warnings {
                    eprintln!("Warning: {w}");
                }
                println!("secret/{name} {what}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("{} (applying {})", server_error(&e), a.file.display());
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn get(g: &GlobalArgs, a: GetArgs) -> anyhow::Result<ExitCode> {
    let format = output_format(&a.output)?;
    let store = open_store(g, Access::Read)?;
    match store.get(&a.namespace, &a.name) {
        Ok(s) => {
            print!("{}", &*secret::render_object(&s, format, SystemTime::now()));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}", server_error(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn list(g: &GlobalArgs, a: ListArgs) -> anyhow::Result<ExitCode> {
    let format = output_format(&a.output)?;
    let store = open_store(g, Access::Read)?;
    let ns = (!a.all_namespaces).then_some(a.namespace.as_str());
    let secrets = store
        .list(ns)
        .map_err(|e| anyhow::anyhow!("{}", server_error(&e)))?;
    if secrets.is_empty() && format == OutputFormat::Table {
        eprintln!("{}", secret::no_resources_message(ns));
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        &*secret::render_list(&secrets, format, a.all_namespaces, SystemTime::now())
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn delete(g: &GlobalArgs, a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g, Access::Read)?;
    match store.delete(&a.namespace, &a.name) {
        Ok(()) => {
            println!("secret \"{}\" deleted", a.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}", server_error(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn inspect(g: &GlobalArgs, a: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(g, Access::Read)?;
    let i = match store.inspect(&a.namespace, &a.name) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{}", server_error(&e));
            return Ok(ExitCode::FAILURE);
        }
    };
    // The format is inside the encryption: it takes a decryption (which
    // may fail without the key; the envelope facts stand anyway).
    let format = store.storage_format_of(&a.namespace, &a.name);
    match a.output.as_str() {
        "json" => {
            let ann: std::collections::BTreeMap<_, _> = i
                .envelope
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).to_string()))
                .collect();
            let doc = serde_json::json!({
                "key": i.key,
                "provider": i.envelope.provider_kind,
                "providerName": i.envelope.provider_name,
                "keyID": i.envelope.key_id,
                "encryptedDEKSourceType": i.envelope.dek_source_type,
                "annotations": ann,
                "storedBytes": i.envelope.stored_len,
                "stale": i.stale,
                "resourceVersion": i.mod_revision.to_string(),
                "storageFormat": format.as_ref().ok().map(|f| f.media_type()),
                "storageFormatError": format.as_ref().err().map(ToString::to_string),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        "text" => {
            println!("key:               {}", i.key);
            println!("provider:          {}", i.envelope.provider_kind);
            if !i.envelope.provider_name.is_empty() {
                println!("provider name:     {}", i.envelope.provider_name);
            }
            if let Some(k) = &i.envelope.key_id {
                println!("key_id:            {k}");
            }
            if let Some(t) = &i.envelope.dek_source_type {
                println!("DEK source type:   {t}");
            }
            for (k, v) in &i.envelope.annotations {
                println!("annotation:        {k}={}", String::from_utf8_lossy(v));
            }
            println!("stored bytes:      {}", i.envelope.stored_len);
            match &format {
                Ok(f) => println!("storage format:    {} ({f})", f.short_name()),
                Err(e) => println!("storage format:    unknown (not decrypted: {e})"),
            }
            println!("resourceVersion:   {}", i.mod_revision);
            println!(
                "stale:             {}",
                if i.stale {
                    "yes (a rewrap would re-encrypt it with the current provider and key)"
                } else {
                    "no"
                }
            );
        }
        other => anyhow::bail!("output={other:?} is not valid: choose text or json"),
    }
    Ok(ExitCode::SUCCESS)
}
