//! `fhirseal config …`: check a configuration before serving with it.

use std::path::PathBuf;

use clap::Subcommand;
use fhirseal::admin::AdminTokenSource;
use fhirseal::config::Config;

/// The configuration commands.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate the configuration (a file, or the embedded defaults) with the
    /// `FHIRSEAL__…` environment overrides applied, and say what the gateway would run with.
    /// Secrets and password hashes are never printed.
    Check {
        /// The configuration file [default: the embedded defaults].
        #[arg(long, env = "FHIRSEAL_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub(crate) fn run(args: Args) -> Result<String, String> {
    match args.command {
        Command::Check { config } => {
            let config =
                Config::load(config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
            Ok(summary(&config))
        }
    }
}

fn summary(config: &Config) -> String {
    let mut lines = vec![
        format!("listen:           {}", config.listen),
        format!(
            "admin API:        {}",
            config
                .admin_listen
                .map_or_else(|| "off".to_string(), |a| a.to_string())
        ),
        format!(
            "admin tokens:     {}",
            match &config.admin_tokens {
                None => "none (no admin API)".to_string(),
                Some(AdminTokenSource::Read { tokens, from }) => format!(
                    "{} from {from}",
                    tokens.names().collect::<Vec<_>>().join(", ")
                ),
                Some(AdminTokenSource::DefaultFile(path)) if path.exists() => {
                    path.display().to_string()
                }
                Some(AdminTokenSource::DefaultFile(path)) => {
                    format!("{} (made with one token on first start)", path.display())
                }
                Some(_) => "configured".to_string(),
            }
        ),
        format!(
            "audit lines:      {}",
            config.audit_log.as_ref().map_or_else(
                || "standard output".to_string(),
                |p| p.display().to_string()
            )
        ),
        format!("max body:         {} bytes", config.max_body_bytes),
        format!("FHIR base:        {}", config.fhir_base),
        format!("upstream:         {}", config.upstream.base_url()),
        format!(
            "authority:        {}",
            redact_url(&config.authority_database)
        ),
        format!(
            "KEK:              {}",
            config.authority_kek_file.as_ref().map_or_else(
                || format!("from {}", fhirseal_authority::KEK_ENV),
                |p| p.display().to_string()
            )
        ),
        format!(
            "policy:           {}",
            if config.policy_files.is_empty() {
                "the embedded general-hospital policy".to_string()
            } else {
                config
                    .policy_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    ];
    for issuer in &config.issuers {
        lines.push(format!("trusted issuer:   {}", issuer.issuer));
    }
    if let Some(introspection) = &config.introspection {
        lines.push(format!("introspection:    {}", introspection.endpoint));
    }
    match &config.embedded {
        Some(server) => lines.push(format!(
            "embedded auth:    {} ({} users, {} clients)",
            server.issuer,
            server.users.len(),
            server.clients.len()
        )),
        None => lines.push("embedded auth:    off".into()),
    }
    lines.join("\n")
}

/// A database URL without its password.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
