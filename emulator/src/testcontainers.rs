//! Testcontainers modules for a Service Bus emulator in a container (feature `testcontainers`).
//!
//! Rust has no Service Bus module (Java, .NET and Go do), so here are two, written like the
//! testcontainers-rs community modules: pinned tags, `Default` that runs, consuming `with_*` builders,
//! documented ports, and a connection string helper for the mapped port.
//!
//! - [`ServiceBusEmulator`]: this crate's emulator as the image `aca-job-lab/servicebus-emulator:dev`,
//!   which `cargo xtask images` builds locally (nothing is pulled). Starts in milliseconds.
//! - [`OfficialServiceBusEmulator`]: Microsoft's `mcr.microsoft.com/azure-messaging/servicebus-emulator`,
//!   which needs a SQL Server sidecar ([`MssqlSidecar`]) on a shared network.
//!   [`OfficialServiceBusEmulator::start_with_sidecar`] starts both and returns an [`OfficialStack`].
//!
//! Both print [`READY_LINE`](crate::READY_LINE) when ready, listen for AMQP on [`AMQP_PORT`] and serve
//! health on [`HEALTH_PORT`], and read their queues from a `Config.json` at [`CONFIG_PATH`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), testcontainers::TestcontainersError> {
//! use servicebus_emulator::testcontainers::{AMQP_PORT, ServiceBusEmulator, connection_string};
//! use testcontainers::runners::AsyncRunner;
//!
//! let emulator = ServiceBusEmulator::default().start().await?;
//! let port = emulator.get_host_port_ipv4(AMQP_PORT).await?;
//! let cs = connection_string("127.0.0.1", port);
//! # let _ = cs; Ok(()) }
//! ```
//!
//! Set `TESTCONTAINERS_COMMAND=keep` to keep the containers after a test for debugging.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use testcontainers::core::{AccessMode, ContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{
    ContainerAsync, ContainerRequest, CopyDataSource, CopyTargetOptions, CopyToContainer, Image,
    ImageExt, TestcontainersError,
};

/// AMQP 1.0 (plain, as both emulators serve it).
pub const AMQP_PORT: ContainerPort = ContainerPort::Tcp(5672);
/// HTTP: health (`GET /health`) on both; on the official emulator 2.x also its management API, which
/// the SDKs' administration clients reach with `Endpoint=sb://<host>:<mapped 5300>;…` (its README,
/// "Choosing the right connection string"). `EMULATOR_HTTP_PORT` moves it inside the container.
pub const HEALTH_PORT: ContainerPort = ContainerPort::Tcp(5300);
/// AMQP over TLS, as Azure serves it: ours, after [`ServiceBusEmulator::with_tls`].
pub const AMQPS_PORT: ContainerPort = ContainerPort::Tcp(5671);
/// HTTPS: the HTTP port's routes (health, counts, administration API) inside TLS, where the SDKs'
/// administration clients call (`https://{namespace}:443`, whatever the connection string's port):
/// ours, after [`ServiceBusEmulator::with_tls`] (the image's `SERVICEBUS_EMULATOR_HTTPS_LISTEN`).
pub const HTTPS_PORT: ContainerPort = ContainerPort::Tcp(443);
/// Where [`ServiceBusEmulator::with_tls`] puts the certificate and key.
pub const TLS_CERT_PATH: &str = "/ServiceBus_Emulator/tls/server.pem";
pub const TLS_KEY_PATH: &str = "/ServiceBus_Emulator/tls/server.key";
/// Where both emulators read their `Config.json`.
pub const CONFIG_PATH: &str = "/ServiceBus_Emulator/ConfigFiles/Config.json";

/// Where our image keeps `--data-dir` state when asked to (a directory its user can write, made for a
/// volume): `docker run -v sb-data:/var/lib/servicebus-emulator -e
/// SERVICEBUS_EMULATOR_DATA_DIR=/var/lib/servicebus-emulator ...`, or
/// [`ServiceBusEmulator::with_data_dir`].
pub const DATA_DIR: &str = "/var/lib/servicebus-emulator";
/// The official emulator's fixed shared access rule, which ours accepts too.
pub const SAS_KEY_NAME: &str = crate::auth::EMULATOR_RULE;
/// The official emulator's fixed shared access key (a well-known development value, not a secret).
pub const SAS_KEY_VALUE: &str = crate::auth::EMULATOR_KEY;

/// The connection string for an emulator reachable at `host:port`, in the official emulator's format.
///
/// Use the mapped port from the host (`get_host_port_ipv4(AMQP_PORT)`), or the container name and 5672
/// from another container on the same network.
pub fn connection_string(host: impl std::fmt::Display, port: u16) -> String {
    crate::auth::emulator_connection_string(format_args!("{host}:{port}"))
}

/// What both emulators expose: AMQP and health.
const EMULATOR_PORTS: &[ContainerPort] = &[AMQP_PORT, HEALTH_PORT];
/// Ours with a certificate: also AMQP over TLS and HTTPS.
const TLS_EMULATOR_PORTS: &[ContainerPort] = &[AMQP_PORT, HEALTH_PORT, AMQPS_PORT, HTTPS_PORT];

/// Both emulators print the same ready line (ours copies the official one so clients wait alike).
fn emulator_ready() -> Vec<WaitFor> {
    vec![WaitFor::message_on_either_std(crate::READY_LINE)]
}

/// A name unique to this process and call, for containers and networks of tests that run in parallel.
fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Our emulator's image, `aca-job-lab/servicebus-emulator:dev`, built by `cargo xtask images`.
///
/// Ready when it prints [`READY_LINE`](crate::READY_LINE). Without [`with_config`](Self::with_config)
/// it serves the lab's queue `queue-messages` (the Config.json baked into the image).
#[derive(Debug, Clone, Default)]
pub struct ServiceBusEmulator {
    config: Vec<CopyToContainer>,
    /// The certificate and key of [`Self::with_tls`].
    tls: Vec<CopyToContainer>,
    env_vars: BTreeMap<String, String>,
    mounts: Vec<Mount>,
}

impl ServiceBusEmulator {
    /// The image name; the tag is [`Self::TAG`].
    pub const NAME: &str = "aca-job-lab/servicebus-emulator";
    /// `dev` is what `cargo xtask images` builds; there is no registry to hold release tags.
    pub const TAG: &str = "dev";

    /// Serve the queues of this `Config.json` (a path on the host, or its bytes).
    ///
    /// The file is copied into the container rather than bind-mounted: the image runs as a non-root
    /// user, which could not read a private temp file through a bind mount, and copying also works
    /// against a remote Docker engine.
    pub fn with_config(mut self, config: impl Into<CopyDataSource>) -> Self {
        let target = CopyTargetOptions::new(CONFIG_PATH).with_mode(0o644);
        self.config = vec![CopyToContainer::new(config, target)];
        self
    }

    /// Serve AMQP over TLS on [`AMQPS_PORT`] and the HTTP routes over HTTPS on [`HTTPS_PORT`] with this
    /// certificate chain and key (PEM; e.g. from [`crate::tls::TestCa`] with the namespace name the
    /// clients use). Clients must trust its CA; map the name to the mapped ports in the client.
    pub fn with_tls(
        mut self,
        certificate_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        // The image's user must read both; the key is a test's, never a real one.
        let copy = |bytes: Vec<u8>, path: &str| {
            CopyToContainer::new(bytes, CopyTargetOptions::new(path).with_mode(0o644))
        };
        self.tls = vec![
            copy(certificate_pem.into(), TLS_CERT_PATH),
            copy(key_pem.into(), TLS_KEY_PATH),
        ];
        for (name, value) in [
            ("SERVICEBUS_EMULATOR_TLS_CERT", TLS_CERT_PATH),
            ("SERVICEBUS_EMULATOR_TLS_KEY", TLS_KEY_PATH),
            ("SERVICEBUS_EMULATOR_TLS_LISTEN", "0.0.0.0:5671"),
            // The image's default, said again so the module does not depend on it.
            ("SERVICEBUS_EMULATOR_HTTPS_LISTEN", "0.0.0.0:443"),
        ] {
            self.env_vars.insert(name.into(), value.into());
        }
        self
    }

    /// Keep messages, run-time entities and session state in the Docker volume `volume` (created by
    /// Docker if missing), mounted at [`DATA_DIR`]: a container started later with the same volume
    /// has them, even after `docker kill`. Remove the volume to start empty.
    pub fn with_data_dir(mut self, volume: impl Into<String>) -> Self {
        self.env_vars
            .insert("SERVICEBUS_EMULATOR_DATA_DIR".into(), DATA_DIR.into());
        self.mounts = vec![Mount::volume_mount(volume.into(), DATA_DIR)];
        self
    }
}

impl Image for ServiceBusEmulator {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tag(&self) -> &str {
        Self::TAG
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        emulator_ready()
    }

    fn copy_to_sources(&self) -> impl IntoIterator<Item = &CopyToContainer> {
        self.config.iter().chain(&self.tls)
    }

    fn env_vars(
        &self,
    ) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        &self.env_vars
    }

    fn mounts(&self) -> impl IntoIterator<Item = &Mount> {
        &self.mounts
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        if self.tls.is_empty() {
            EMULATOR_PORTS
        } else {
            TLS_EMULATOR_PORTS
        }
    }
}

/// Microsoft's Service Bus emulator, `mcr.microsoft.com/azure-messaging/servicebus-emulator`.
///
/// It stores its state in SQL Server, so it needs a [`MssqlSidecar`] reachable under the name in
/// `SQL_SERVER` with the same `MSSQL_SA_PASSWORD`. [`start_with_sidecar`](Self::start_with_sidecar) does
/// that wiring; [`requests`](Self::requests) returns the two wired requests without starting anything.
/// Its licence must be accepted explicitly with [`with_accept_eula`](Self::with_accept_eula), as the
/// image refuses to start otherwise. x86-64 only.
#[derive(Debug, Clone)]
pub struct OfficialServiceBusEmulator {
    env_vars: BTreeMap<String, String>,
    mounts: Vec<Mount>,
    /// [`Self::TAG`] unless [`with_version`](Self::with_version) picked another.
    tag: String,
}

impl OfficialServiceBusEmulator {
    /// The image name; the tag is [`Self::TAG`] unless [`with_version`](Self::with_version) says otherwise.
    pub const NAME: &str = "mcr.microsoft.com/azure-messaging/servicebus-emulator";
    /// The current release: 2.0.0 added the management API (administration clients) on the HTTP port
    /// ([`HEALTH_PORT`], 5300), which it also uses for health. Still needs the SQL Server sidecar.
    pub const TAG: &str = "2.0.0";
    /// The previous release, which the other languages' modules were first verified with; select it with
    /// `with_version(OfficialServiceBusEmulator::TAG_1_1_2)` (e.g. where only that image is present).
    pub const TAG_1_1_2: &str = "1.1.2";
    /// The sidecar's name on the network unless [`with_sql_server`](Self::with_sql_server) says otherwise.
    pub const DEFAULT_SQL_SERVER: &str = "sqledge";
    /// A password that meets SQL Server's complexity rules; the sidecar is private to the test network.
    pub const DEFAULT_SA_PASSWORD: &str = "AcaJobLab#Emulator1";

    /// SQL Server and then the emulator each take tens of seconds to come up, more on a loaded machine;
    /// testcontainers' default of 60 s is too tight for either.
    pub const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

    /// Run this version of the image instead of [`Self::TAG`], e.g. [`Self::TAG_1_1_2`].
    pub fn with_version(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// Accept the emulator's licence (`ACCEPT_EULA=Y`); also accepts the sidecar's in [`requests`](Self::requests).
    pub fn with_accept_eula(mut self) -> Self {
        self.env_vars.insert("ACCEPT_EULA".into(), "Y".into());
        self
    }

    /// Serve the queues of this `Config.json`, bind-mounted read-only at [`CONFIG_PATH`] as the official
    /// docs and compose file do. The path must be absolute and readable by the Docker engine.
    pub fn with_config(mut self, host_path: impl AsRef<Path>) -> Self {
        let source = host_path.as_ref().to_string_lossy().into_owned();
        self.mounts =
            vec![Mount::bind_mount(source, CONFIG_PATH).with_access_mode(AccessMode::ReadOnly)];
        self
    }

    /// The host name of the SQL Server sidecar on the shared network (`SQL_SERVER`).
    pub fn with_sql_server(mut self, host: impl Into<String>) -> Self {
        self.env_vars.insert("SQL_SERVER".into(), host.into());
        self
    }

    /// The sidecar's `sa` password (`MSSQL_SA_PASSWORD`); [`requests`](Self::requests) gives the sidecar the same.
    pub fn with_sa_password(mut self, password: impl Into<String>) -> Self {
        self.env_vars
            .insert("MSSQL_SA_PASSWORD".into(), password.into());
        self
    }

    fn env(&self, name: &str) -> Option<&str> {
        self.env_vars.get(name).map(String::as_str)
    }

    /// The sidecar and the emulator, wired on `network`: the sidecar is named after `SQL_SERVER`, shares
    /// the password and the licence acceptance. Nothing is started; start the sidecar first.
    pub fn requests(
        self,
        network: &str,
    ) -> (
        ContainerRequest<MssqlSidecar>,
        ContainerRequest<OfficialServiceBusEmulator>,
    ) {
        let sql_server = self
            .env("SQL_SERVER")
            .unwrap_or(Self::DEFAULT_SQL_SERVER)
            .to_string();
        let password = self
            .env("MSSQL_SA_PASSWORD")
            .unwrap_or(Self::DEFAULT_SA_PASSWORD)
            .to_string();
        let mut sidecar = MssqlSidecar::default().with_sa_password(&password);
        if self.env("ACCEPT_EULA") == Some("Y") {
            sidecar = sidecar.with_accept_eula();
        }
        let sidecar = sidecar
            .with_network(network)
            .with_container_name(&sql_server)
            .with_startup_timeout(Self::STARTUP_TIMEOUT);
        let emulator = self
            .with_sql_server(sql_server)
            .with_sa_password(password)
            .with_network(network)
            .with_container_name(unique_name("servicebus-emulator"))
            .with_startup_timeout(Self::STARTUP_TIMEOUT);
        (sidecar, emulator)
    }

    /// Start the SQL sidecar and then the emulator on a fresh network, each with a unique name so tests
    /// can run in parallel. The returned stack owns both containers; dropping it removes them.
    pub async fn start_with_sidecar(self) -> Result<OfficialStack, TestcontainersError> {
        let network = unique_name("servicebus-official");
        let this = if self.env("SQL_SERVER").is_some() {
            self
        } else {
            self.with_sql_server(unique_name("sqledge"))
        };
        let (sidecar, emulator) = this.requests(&network);
        let sql = sidecar.start().await?;
        let emulator = emulator.start().await?;
        Ok(OfficialStack {
            emulator,
            sql,
            network,
        })
    }
}

impl Default for OfficialServiceBusEmulator {
    fn default() -> Self {
        let mut env_vars = BTreeMap::new();
        env_vars.insert("MSSQL_SA_PASSWORD".into(), Self::DEFAULT_SA_PASSWORD.into());
        // The emulator waits this many seconds for SQL before connecting; the sidecar's own ready
        // condition has already waited for it, so no extra fixed delay is needed.
        env_vars.insert("SQL_WAIT_INTERVAL".into(), "0".into());
        Self {
            env_vars,
            mounts: Vec::new(),
            tag: Self::TAG.to_owned(),
        }
    }
}

impl Image for OfficialServiceBusEmulator {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tag(&self) -> &str {
        &self.tag
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        emulator_ready()
    }

    fn env_vars(
        &self,
    ) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        &self.env_vars
    }

    fn mounts(&self) -> impl IntoIterator<Item = &Mount> {
        &self.mounts
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        EMULATOR_PORTS
    }
}

/// SQL Server as the official emulator's sidecar (`mcr.microsoft.com/mssql/server`).
///
/// Azure SQL Edge, which older emulator docs use, is retired; `with_name`/`with_tag` from [`ImageExt`]
/// switch to it (`mcr.microsoft.com/azure-sql-edge`) where that image is what a machine has.
#[derive(Debug, Clone)]
pub struct MssqlSidecar {
    env_vars: BTreeMap<String, String>,
}

impl MssqlSidecar {
    /// The image name; the tag is [`Self::TAG`].
    pub const NAME: &str = "mcr.microsoft.com/mssql/server";
    /// The tag the other languages' Service Bus modules pin.
    pub const TAG: &str = "2022-CU14-ubuntu-22.04";

    /// Accept SQL Server's licence (`ACCEPT_EULA=Y`).
    pub fn with_accept_eula(mut self) -> Self {
        self.env_vars.insert("ACCEPT_EULA".into(), "Y".into());
        self
    }

    /// The `sa` password (`MSSQL_SA_PASSWORD`).
    pub fn with_sa_password(mut self, password: impl Into<String>) -> Self {
        self.env_vars
            .insert("MSSQL_SA_PASSWORD".into(), password.into());
        self
    }
}

impl Default for MssqlSidecar {
    fn default() -> Self {
        Self {
            env_vars: BTreeMap::new(),
        }
        .with_sa_password(OfficialServiceBusEmulator::DEFAULT_SA_PASSWORD)
    }
}

impl Image for MssqlSidecar {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tag(&self) -> &str {
        Self::TAG
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::message_on_stdout(
            "SQL Server is now ready for client connections",
        )]
    }

    fn env_vars(
        &self,
    ) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        &self.env_vars
    }
}

/// The official emulator with its SQL sidecar, started by [`OfficialServiceBusEmulator::start_with_sidecar`].
///
/// Field order matters: the emulator is dropped (removed) before the sidecar it depends on.
pub struct OfficialStack {
    pub emulator: ContainerAsync<OfficialServiceBusEmulator>,
    pub sql: ContainerAsync<MssqlSidecar>,
    /// The network both are on; put a worker container on it to reach the emulator by its name.
    pub network: String,
}

impl OfficialStack {
    /// The connection string for a client on the host (mapped AMQP port).
    pub async fn connection_string(&self) -> Result<String, TestcontainersError> {
        let port = self.emulator.get_host_port_ipv4(AMQP_PORT).await?;
        Ok(connection_string("127.0.0.1", port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<I: Image>(request: &ContainerRequest<I>) -> BTreeMap<String, String> {
        request
            .env_vars()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The wiring the official emulator needs, checked without Docker: both containers on one network,
    /// the emulator pointed at the sidecar by name with the same password, licences accepted, the
    /// Config.json mounted where the emulator reads it, and the ready line and ports it documents.
    #[test]
    fn official_request_wires_the_sidecar_mounts_the_config_and_accepts_the_eula() {
        let (sidecar, emulator) = OfficialServiceBusEmulator::default()
            .with_accept_eula()
            .with_config("/work/lab/servicebus/Config.json")
            .with_sql_server("sql-1")
            .with_sa_password("S3cret!pass")
            .requests("net-1");

        assert_eq!(
            emulator.descriptor(),
            "mcr.microsoft.com/azure-messaging/servicebus-emulator:2.0.0"
        );
        assert_eq!(
            sidecar.descriptor(),
            "mcr.microsoft.com/mssql/server:2022-CU14-ubuntu-22.04"
        );
        assert_eq!(emulator.network().as_deref(), Some("net-1"));
        assert_eq!(sidecar.network().as_deref(), Some("net-1"));
        assert_eq!(sidecar.container_name().as_deref(), Some("sql-1"));

        let env = env_of(&emulator);
        assert_eq!(env.get("ACCEPT_EULA").map(String::as_str), Some("Y"));
        assert_eq!(env.get("SQL_SERVER").map(String::as_str), Some("sql-1"));
        assert_eq!(
            env.get("MSSQL_SA_PASSWORD").map(String::as_str),
            Some("S3cret!pass")
        );
        let sidecar_env = env_of(&sidecar);
        assert_eq!(
            sidecar_env.get("ACCEPT_EULA").map(String::as_str),
            Some("Y")
        );
        assert_eq!(
            sidecar_env.get("MSSQL_SA_PASSWORD"),
            env.get("MSSQL_SA_PASSWORD")
        );

        let mounts: Vec<_> = emulator.mounts().collect();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].source(), Some("/work/lab/servicebus/Config.json"));
        assert_eq!(mounts[0].target(), Some(CONFIG_PATH));
        assert_eq!(mounts[0].access_mode(), AccessMode::ReadOnly);

        assert_eq!(emulator.expose_ports(), &[AMQP_PORT, HEALTH_PORT]);
        assert_eq!(
            emulator.startup_timeout(),
            Some(OfficialServiceBusEmulator::STARTUP_TIMEOUT)
        );
        assert_eq!(
            sidecar.startup_timeout(),
            Some(OfficialServiceBusEmulator::STARTUP_TIMEOUT)
        );
        let ready = format!("{:?}", emulator.ready_conditions());
        assert!(
            ready.contains("Emulator Service is Successfully Up!"),
            "{ready}"
        );
    }

    /// 2.0.0 by default, with the HTTP port (health and, since 2.0.0, management) exposed; 1.1.2 on
    /// request, wired the same way.
    #[test]
    fn official_version_defaults_to_2_0_0_and_1_1_2_stays_selectable() {
        let (_, current) = OfficialServiceBusEmulator::default().requests("net-1");
        assert_eq!(
            current.descriptor(),
            "mcr.microsoft.com/azure-messaging/servicebus-emulator:2.0.0"
        );
        assert!(current.expose_ports().contains(&ContainerPort::Tcp(5300)));
        let (_, previous) = OfficialServiceBusEmulator::default()
            .with_version(OfficialServiceBusEmulator::TAG_1_1_2)
            .requests("net-1");
        assert_eq!(
            previous.descriptor(),
            "mcr.microsoft.com/azure-messaging/servicebus-emulator:1.1.2"
        );
        assert_eq!(previous.expose_ports(), current.expose_ports());
        assert_eq!(env_of(&previous), env_of(&current));
    }

    #[test]
    fn official_emulator_refuses_to_assume_the_licence_is_accepted() {
        let (sidecar, emulator) = OfficialServiceBusEmulator::default().requests("net");
        assert!(!env_of(&emulator).contains_key("ACCEPT_EULA"));
        assert!(!env_of(&sidecar).contains_key("ACCEPT_EULA"));
        assert_eq!(
            env_of(&emulator).get("SQL_SERVER").map(String::as_str),
            Some("sqledge")
        );
    }

    #[test]
    fn our_image_is_pinned_copies_the_config_readably_and_waits_for_the_ready_line() {
        let image = ServiceBusEmulator::default().with_config(b"{}".to_vec());
        assert_eq!(
            format!("{}:{}", image.name(), image.tag()),
            "aca-job-lab/servicebus-emulator:dev"
        );
        let copies = format!(
            "{:?}",
            image.copy_to_sources().into_iter().collect::<Vec<_>>()
        );
        assert!(
            copies.contains(CONFIG_PATH) && copies.contains("mode: Some(420)"),
            "{copies}"
        );
        assert_eq!(image.expose_ports(), &[AMQP_PORT, HEALTH_PORT]);
        assert!(
            format!("{:?}", image.ready_conditions())
                .contains("Emulator Service is Successfully Up!")
        );
    }

    #[test]
    fn with_tls_copies_the_pem_files_and_exposes_amqps_and_https() {
        let image = ServiceBusEmulator::default().with_tls(b"CERT".to_vec(), b"KEY".to_vec());
        assert_eq!(
            image.expose_ports(),
            &[AMQP_PORT, HEALTH_PORT, AMQPS_PORT, HTTPS_PORT]
        );
        let copies = format!(
            "{:?}",
            image.copy_to_sources().into_iter().collect::<Vec<_>>()
        );
        assert!(
            copies.contains(TLS_CERT_PATH) && copies.contains(TLS_KEY_PATH),
            "{copies}"
        );
        let env = env_of(&ContainerRequest::from(image));
        assert_eq!(
            env.get("SERVICEBUS_EMULATOR_TLS_CERT").map(String::as_str),
            Some(TLS_CERT_PATH)
        );
        assert_eq!(
            env.get("SERVICEBUS_EMULATOR_HTTPS_LISTEN")
                .map(String::as_str),
            Some("0.0.0.0:443")
        );
    }

    #[test]
    fn connection_string_has_the_official_emulator_format_with_the_port() {
        assert_eq!(
            connection_string("127.0.0.1", 49153),
            "Endpoint=sb://127.0.0.1:49153;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
        );
    }
}
