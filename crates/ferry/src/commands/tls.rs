//! `ferry tls init`: a private CA, a server certificate signed by it, and a token, in one
//! directory, with the command lines that use them.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::cli::{TlsArgs, TlsClientArgs, TlsCommand, TlsInitArgs};

/// The files `init` writes, with their modes.
const FILES: [(&str, u32); 5] = [
    ("ca.pem", 0o644),
    ("ca-key.pem", 0o600),
    ("server.pem", 0o644),
    ("server-key.pem", 0o600),
    ("token", 0o600),
];

/// Runs a `ferry tls` subcommand.
pub fn run(args: TlsArgs) -> Result<()> {
    match args.command {
        TlsCommand::Init(args) => init(&args),
        TlsCommand::Client(args) => client(&args),
    }
}

fn client(args: &TlsClientArgs) -> Result<()> {
    let name = &args.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        || name.starts_with('.')
    {
        bail!("client name '{name}': use letters, digits and - _ . @ (it becomes a file name)");
    }
    let read = |file: &str| {
        let path = args.dir.join(file);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?).context("ca-key.pem is not a key")?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, &ca_key)
        .context("ca.pem is not a CA certificate")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, name.as_str());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let clients = args.dir.join("clients");
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&clients)
        .with_context(|| format!("cannot create {}", clients.display()))?;
    let cert_name = format!("{name}.pem");
    let key_name = format!("{name}-key.pem");
    if clients.join(&cert_name).exists() {
        bail!("{} already exists", clients.join(&cert_name).display());
    }
    write_mode(&clients, &cert_name, &cert.pem(), 0o644)?;
    write_mode(&clients, &key_name, &key.serialize_pem(), 0o600)?;
    let shown = clients.display();
    println!("Created {shown}/{cert_name} and {shown}/{key_name}.");
    println!("Daemon: add --client-ca {}/ca.pem", args.dir.display());
    println!(
        "Client: ferry --host HOST:PORT --ca {}/ca.pem --cert {shown}/{cert_name} --key {shown}/{key_name} run -- ...",
        args.dir.display()
    );
    Ok(())
}

fn init(args: &TlsInitArgs) -> Result<()> {
    let dir = &args.dir;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    if !args.force {
        for (name, _) in FILES {
            if dir.join(name).exists() {
                bail!(
                    "{} already exists; use --force to replace the files in {}",
                    dir.join(name).display(),
                    dir.display()
                );
            }
        }
    }
    let host = hostname();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("ferry CA ({host})"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !host.is_empty() && !names.contains(&host) {
        names.push(host.clone());
    }
    for name in &args.names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut server_params = CertificateParams::new(names.clone())
        .context("a --name is neither a DNS name nor an IP address")?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, format!("ferry daemon ({host})"));
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let token = random_token()?;
    write(dir, "ca.pem", &ca_cert.pem())?;
    write(dir, "ca-key.pem", &ca_key.serialize_pem())?;
    write(dir, "server.pem", &server_cert.pem())?;
    write(dir, "server-key.pem", &server_key.serialize_pem())?;
    write(dir, "token", &format!("{token}\n"))?;

    let shown = dir.display();
    let reach = if host.is_empty() {
        "HOST"
    } else {
        host.as_str()
    };
    println!("Created {shown}/{{ca.pem,server.pem,server-key.pem,token}} (and ca-key.pem, keep it private).");
    println!("The server certificate is valid for: {}", names.join(", "));
    println!();
    println!(
        "On the daemon's machine (the token is the key: anyone holding it may run any command;"
    );
    println!("leave out --allow-any-command to allow only the configuration file's catalog):");
    println!(
        "  ferry daemon --listen ferry:tls:0.0.0.0:7070 --tls-dir {shown} --allow-any-command"
    );
    println!("On a client (copy ca.pem and token to it, into a directory of mode 0700):");
    println!("  ferry --host {reach}:7070 --tls-dir {shown} run -- uname -a");
    Ok(())
}

/// Writes a file with the mode `FILES` gives it.
fn write(dir: &Path, name: &str, contents: &str) -> Result<()> {
    let mode = FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0o600, |(_, mode)| *mode);
    write_mode(dir, name, contents, mode)
}

/// Writes a file created with `mode`.
fn write_mode(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<()> {
    let path = dir.join(name);
    // Remove first, so that a replaced key never passes through a wider mode.
    let _ = std::fs::remove_file(&path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// 32 random bytes as hex.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
                .context("cannot get random bytes")?;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// This machine's host name ("" if unknown).
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
