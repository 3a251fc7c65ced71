//! A connection to a REAPI server and the calls `ferry rake` makes on it.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use bazel_remote_apis::google::longrunning::operations_client::OperationsClient;
use bazel_remote_apis::google::longrunning::{operation, CancelOperationRequest, Operation};
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::digest::{Blob, BlobSource};
use crate::proto::action_cache_client::ActionCacheClient;
use crate::proto::capabilities_client::CapabilitiesClient;
use crate::proto::content_addressable_storage_client::ContentAddressableStorageClient;
use crate::proto::execution_client::ExecutionClient;
use crate::proto::{
    batch_update_blobs_request, digest_function, execution_stage, ActionResult,
    BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, ExecuteOperationMetadata,
    ExecuteRequest, ExecuteResponse, FindMissingBlobsRequest, GetActionResultRequest,
    GetCapabilitiesRequest, WaitExecutionRequest,
};

/// Where a REAPI server is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// `grpc://HOST:PORT` (plain) or `grpcs://HOST:PORT` (TLS).
    pub url: String,
    /// The instance name (often empty).
    pub instance: String,
    /// With `grpcs://`: the CA that signed the server's certificate (else the system's roots).
    pub ca: Option<PathBuf>,
    /// With `grpcs://`: a client certificate and its key (PEM).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A bearer token, sent as `authorization: Bearer TOKEN` with every call.
    pub token: Option<String>,
}

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL or the TLS files.
    #[error("{0}")]
    Config(String),
    /// No connection.
    #[error("cannot reach the REAPI server at {url}: {why}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// Why.
        why: String,
    },
    /// A call failed.
    #[error("{call}: {code:?}: {message}")]
    Rpc {
        /// The call.
        call: &'static str,
        /// Its status code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// A local file could not be read.
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    /// The server answered something it should not have.
    #[error("the REAPI server {0}")]
    Protocol(String),
    /// The server no longer knows an operation it was running (it restarted, and its
    /// scheduler forgot): the action must be submitted again, its inputs uploaded again.
    #[error("the REAPI server lost operation {0} (did it restart?)")]
    OperationLost(String),
}

impl ClusterError {
    /// A FAILED_PRECONDITION: the server lacks blobs the action needs (upload, try again).
    pub fn is_failed_precondition(&self) -> bool {
        matches!(
            self,
            ClusterError::Rpc {
                code: Code::FailedPrecondition,
                ..
            }
        )
    }

    /// The server lost the operation (see [`ClusterError::OperationLost`]).
    pub fn is_operation_lost(&self) -> bool {
        matches!(self, ClusterError::OperationLost(_))
    }

    fn rpc(call: &'static str) -> impl Fn(tonic::Status) -> ClusterError {
        move |status| ClusterError::Rpc {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// An operation's stage, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Checking the action cache.
    CacheCheck,
    /// Waiting for a worker.
    Queued,
    /// Running on a worker.
    Executing,
    /// Done.
    Completed,
    /// Not said.
    Unknown,
}

/// What happened to an operation while it was followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The server named the operation.
    Named(String),
    /// It reached a stage.
    Stage(Stage),
    /// The stream dropped (why); it is resumed with WaitExecution.
    Resuming(String),
}

/// An executed (or cached) action's result.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The result.
    pub result: ActionResult,
    /// It came from the action cache.
    pub cached: bool,
    /// The server's message, if any.
    pub message: String,
}

/// The most bytes one batch call carries when the server sets no lower limit (gRPC's usual
/// message limit is 4 MiB; the rest is room for the request around the data).
const DEFAULT_BATCH_LIMIT: usize = 4 * 1024 * 1024 - 64 * 1024;

/// ByteStream pieces.
const BYTESTREAM_CHUNK: usize = 1024 * 1024;

/// How many times a dropped Execute stream is resumed before giving up: with pauses growing
/// by 100 ms up to [`MAX_RESUME_PAUSE`], about a minute, time for a server to restart.
const MAX_RESUMES: u32 = 40;
/// The longest pause between two resumptions.
const MAX_RESUME_PAUSE: Duration = Duration::from_secs(2);

/// A connection to a REAPI server, after GetCapabilities.
#[derive(Clone)]
pub struct Cluster {
    channel: Channel,
    instance: String,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    batch_limit: usize,
    /// The URL, for messages.
    pub url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .field("instance", &self.instance)
            .field("batch_limit", &self.batch_limit)
            .finish()
    }
}

impl Cluster {
    /// Connects and asks the server's capabilities: it must take SHA-256 digests and execute.
    pub async fn connect(connection: &Connection) -> Result<Cluster, ClusterError> {
        let (tls, rest) = if let Some(rest) = connection.url.strip_prefix("grpcs://") {
            (true, rest)
        } else if let Some(rest) = connection.url.strip_prefix("grpc://") {
            (false, rest)
        } else {
            return Err(ClusterError::Config(format!(
                "{:?} is not a REAPI server's URL: grpc://HOST:PORT or grpcs://HOST:PORT",
                connection.url
            )));
        };
        let authority = rest.trim_end_matches('/');
        let host = authority
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .ok_or_else(|| {
                ClusterError::Config(format!(
                    "{:?} names no port: grpc://HOST:PORT",
                    connection.url
                ))
            })?;
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{authority}"))
            .map_err(|e| ClusterError::Config(format!("{:?}: {e}", connection.url)))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if tls {
            endpoint = endpoint
                .tls_config(tls_config(connection, host)?)
                .map_err(|e| ClusterError::Config(format!("TLS: {e}")))?;
        } else if connection.ca.is_some() || connection.identity.is_some() {
            return Err(ClusterError::Config(
                "a CA or a client certificate needs a grpcs:// URL".into(),
            ));
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClusterError::Unreachable {
                url: connection.url.clone(),
                why: error_chain(&e),
            })?;
        let token =
            match &connection.token {
                Some(token) => Some(format!("Bearer {}", token.trim()).parse().map_err(|_| {
                    ClusterError::Config("the token is not printable ASCII".into())
                })?),
                None => None,
            };
        let mut cluster = Cluster {
            channel,
            instance: connection.instance.clone(),
            token,
            batch_limit: DEFAULT_BATCH_LIMIT,
            url: connection.url.clone(),
        };
        cluster.capabilities().await?;
        Ok(cluster)
    }

    /// Wraps a message with the token.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    async fn capabilities(&mut self) -> Result<(), ClusterError> {
        let capabilities = CapabilitiesClient::new(self.channel.clone())
            .get_capabilities(self.request(GetCapabilitiesRequest {
                instance_name: self.instance.clone(),
            }))
            .await
            .map_err(ClusterError::rpc("GetCapabilities"))?
            .into_inner();
        let sha256 = digest_function::Value::Sha256 as i32;
        if let Some(cache) = &capabilities.cache_capabilities {
            if !cache.digest_functions.is_empty() && !cache.digest_functions.contains(&sha256) {
                return Err(ClusterError::Protocol(format!(
                    "at {} does not take SHA-256 digests",
                    self.url
                )));
            }
            if cache.max_batch_total_size_bytes > 0 {
                let limit = usize::try_from(cache.max_batch_total_size_bytes).unwrap_or(usize::MAX);
                // Room for the request's own fields.
                self.batch_limit = limit
                    .saturating_sub(16 * 1024)
                    .clamp(1, DEFAULT_BATCH_LIMIT);
            }
        }
        match &capabilities.execution_capabilities {
            Some(execution) if execution.exec_enabled => Ok(()),
            _ => Err(ClusterError::Protocol(format!(
                "at {} does not execute actions (a cache only?)",
                self.url
            ))),
        }
    }

    /// The most bytes one batch call carries.
    pub fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    /// Uploads the blobs the CAS lacks (FindMissingBlobs; BatchUpdateBlobs, or ByteStream.Write
    /// above the batch limit); the bytes uploaded.
    pub async fn upload_missing(&self, blobs: &[Blob]) -> Result<u64, ClusterError> {
        // Indices, not references, are kept across the awaits: a future holding references
        // made by a closure is not Send for every lifetime (a rustc limitation).
        let mut seen = HashSet::new();
        let unique: Vec<usize> = (0..blobs.len())
            .filter(|&i| {
                blobs[i].digest.size_bytes > 0 && seen.insert(blobs[i].digest.hash.clone())
            })
            .collect();
        if unique.is_empty() {
            return Ok(0);
        }
        let blob_digests: Vec<Digest> = unique.iter().map(|&i| blobs[i].digest.clone()).collect();
        let missing: HashSet<String> = ContentAddressableStorageClient::new(self.channel.clone())
            .find_missing_blobs(self.request(FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests,
                digest_function: 0,
            }))
            .await
            .map_err(ClusterError::rpc("FindMissingBlobs"))?
            .into_inner()
            .missing_blob_digests
            .into_iter()
            .map(|d| d.hash)
            .collect();
        let wanted: Vec<usize> = unique
            .into_iter()
            .filter(|&i| missing.contains(&blobs[i].digest.hash))
            .collect();
        let mut sent = 0u64;
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        for index in wanted {
            let blob = &blobs[index];
            let size = usize::try_from(blob.digest.size_bytes).unwrap_or(usize::MAX);
            sent += size as u64;
            if size > self.batch_limit {
                self.write_stream(blob).await?;
                continue;
            }
            if batch_bytes + size > self.batch_limit {
                self.write_batch(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            let data = match blob.read() {
                Ok(data) => data,
                Err(e) => return Err(ClusterError::Io(describe(blob), e)),
            };
            batch.push(batch_update_blobs_request::Request {
                digest: Some(blob.digest.clone()),
                data,
                compressor: 0,
            });
            batch_bytes += size;
        }
        if !batch.is_empty() {
            self.write_batch(batch).await?;
        }
        Ok(sent)
    }

    async fn write_batch(
        &self,
        requests: Vec<batch_update_blobs_request::Request>,
    ) -> Result<(), ClusterError> {
        let responses = ContentAddressableStorageClient::new(self.channel.clone())
            .batch_update_blobs(self.request(BatchUpdateBlobsRequest {
                instance_name: self.instance.clone(),
                requests,
                digest_function: 0,
            }))
            .await
            .map_err(ClusterError::rpc("BatchUpdateBlobs"))?
            .into_inner()
            .responses;
        for response in responses {
            if let Some(status) = response.status.filter(|s| s.code != 0) {
                return Err(ClusterError::Rpc {
                    call: "BatchUpdateBlobs",
                    code: Code::from_i32(status.code),
                    message: format!(
                        "{}: {}",
                        response.digest.map(|d| d.hash).unwrap_or_default(),
                        status.message
                    ),
                });
            }
        }
        Ok(())
    }

    /// Uploads one blob with ByteStream.Write, in pieces read (on a blocking thread) as they
    /// are sent.
    async fn write_stream(&self, blob: &Blob) -> Result<(), ClusterError> {
        let size = blob.digest.size_bytes;
        let resource = format!(
            "{}uploads/{}/blobs/{}/{size}",
            self.prefix(),
            upload_id(),
            blob.digest.hash
        );
        let mut reader: Box<dyn Read + Send> = match &blob.source {
            BlobSource::Bytes(data) => Box::new(std::io::Cursor::new(data.clone())),
            BlobSource::File(path) => Box::new(
                std::fs::File::open(path).map_err(|e| ClusterError::Io(describe(blob), e))?,
            ),
        };
        let (pieces, stream) = tokio::sync::mpsc::channel(4);
        let reading = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut offset = 0i64;
            while offset < size {
                let want = usize::try_from(size - offset)
                    .map_or(BYTESTREAM_CHUNK, |left| left.min(BYTESTREAM_CHUNK));
                let mut data = vec![0u8; want];
                reader.read_exact(&mut data)?;
                let piece = WriteRequest {
                    resource_name: if offset == 0 {
                        resource.clone()
                    } else {
                        String::new()
                    },
                    write_offset: offset,
                    finish_write: offset + want as i64 >= size,
                    data,
                };
                offset += want as i64;
                if pieces.blocking_send(piece).is_err() {
                    // The call ended early; its status says why.
                    break;
                }
            }
            Ok(())
        });
        let written = ByteStreamClient::new(self.channel.clone())
            .write(self.request(tokio_stream::wrappers::ReceiverStream::new(stream)))
            .await;
        match reading.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ClusterError::Io(describe(blob), e)),
            Err(e) => return Err(ClusterError::Io(describe(blob), std::io::Error::other(e))),
        }
        let response = written
            .map_err(ClusterError::rpc("ByteStream.Write"))?
            .into_inner();
        if response.committed_size != size && response.committed_size != -1 {
            return Err(ClusterError::Protocol(format!(
                "took {} of the {size} bytes of {}",
                response.committed_size,
                describe(blob)
            )));
        }
        Ok(())
    }

    fn prefix(&self) -> String {
        if self.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.instance)
        }
    }

    /// The blobs named (BatchReadBlobs, or ByteStream.Read above the batch limit), by hash.
    pub async fn read_blobs(
        &self,
        digests: &[Digest],
    ) -> Result<HashMap<String, Vec<u8>>, ClusterError> {
        let mut out = HashMap::new();
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        for digest in digests {
            if out.contains_key(&digest.hash) || batch.contains(digest) {
                continue;
            }
            let size = usize::try_from(digest.size_bytes).unwrap_or(usize::MAX);
            if size == 0 {
                out.insert(digest.hash.clone(), Vec::new());
            } else if size > self.batch_limit {
                out.insert(digest.hash.clone(), self.read_stream(digest).await?);
            } else {
                if batch_bytes + size > self.batch_limit {
                    out.extend(self.read_batch(std::mem::take(&mut batch)).await?);
                    batch_bytes = 0;
                }
                batch.push(digest.clone());
                batch_bytes += size;
            }
        }
        if !batch.is_empty() {
            out.extend(self.read_batch(batch).await?);
        }
        Ok(out)
    }

    async fn read_batch(
        &self,
        digests: Vec<Digest>,
    ) -> Result<Vec<(String, Vec<u8>)>, ClusterError> {
        let responses = ContentAddressableStorageClient::new(self.channel.clone())
            .batch_read_blobs(self.request(BatchReadBlobsRequest {
                instance_name: self.instance.clone(),
                digests,
                acceptable_compressors: Vec::new(),
                digest_function: 0,
            }))
            .await
            .map_err(ClusterError::rpc("BatchReadBlobs"))?
            .into_inner()
            .responses;
        let mut out = Vec::new();
        for response in responses {
            let hash = response.digest.map(|d| d.hash).unwrap_or_default();
            if let Some(status) = response.status.filter(|s| s.code != 0) {
                return Err(ClusterError::Rpc {
                    call: "BatchReadBlobs",
                    code: Code::from_i32(status.code),
                    message: format!("{hash}: {}", status.message),
                });
            }
            out.push((hash, response.data));
        }
        Ok(out)
    }

    async fn read_stream(&self, digest: &Digest) -> Result<Vec<u8>, ClusterError> {
        let mut stream = ByteStreamClient::new(self.channel.clone())
            .read(self.request(ReadRequest {
                resource_name: format!(
                    "{}blobs/{}/{}",
                    self.prefix(),
                    digest.hash,
                    digest.size_bytes
                ),
                read_offset: 0,
                read_limit: 0,
            }))
            .await
            .map_err(ClusterError::rpc("ByteStream.Read"))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(piece) = stream
            .message()
            .await
            .map_err(ClusterError::rpc("ByteStream.Read"))?
        {
            data.extend_from_slice(&piece.data);
        }
        if data.len() as i64 != digest.size_bytes {
            return Err(ClusterError::Protocol(format!(
                "sent {} of the {} bytes of blob {}",
                data.len(),
                digest.size_bytes,
                digest.hash
            )));
        }
        Ok(data)
    }

    /// The action cache's result for `action`, if it has one.
    pub async fn cached_result(
        &self,
        action: &Digest,
    ) -> Result<Option<ActionResult>, ClusterError> {
        let answer = ActionCacheClient::new(self.channel.clone())
            .get_action_result(self.request(GetActionResultRequest {
                instance_name: self.instance.clone(),
                action_digest: Some(action.clone()),
                inline_stdout: true,
                inline_stderr: true,
                ..GetActionResultRequest::default()
            }))
            .await;
        match answer {
            Ok(result) => Ok(Some(result.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(ClusterError::rpc("GetActionResult")(status)),
        }
    }

    /// Executes `action`, following its operation (resumed with WaitExecution when the stream
    /// drops) until it is done; `progress` hears of its name, stages and resumptions as they
    /// come.
    pub async fn execute(
        &self,
        action: &Digest,
        skip_cache_lookup: bool,
        progress: tokio::sync::mpsc::UnboundedSender<Progress>,
    ) -> Result<Executed, ClusterError> {
        // A listener that went away only stops hearing.
        let progress = |event| {
            let _ = progress.send(event);
        };
        let mut execution = ExecutionClient::new(self.channel.clone());
        let mut stream = execution
            .execute(self.request(ExecuteRequest {
                instance_name: self.instance.clone(),
                skip_cache_lookup,
                action_digest: Some(action.clone()),
                ..ExecuteRequest::default()
            }))
            .await
            .map_err(ClusterError::rpc("Execute"))?
            .into_inner();
        let mut name = String::new();
        let mut resumes = 0;
        loop {
            let why = match stream.message().await {
                Ok(Some(operation)) => {
                    if !operation.name.is_empty() && operation.name != name {
                        name.clone_from(&operation.name);
                        progress(Progress::Named(name.clone()));
                    }
                    if let Some(stage) = stage_of(&operation) {
                        progress(Progress::Stage(stage));
                    }
                    if operation.done {
                        return finished(operation);
                    }
                    continue;
                }
                Ok(None) => "the stream ended before the operation was done".to_owned(),
                Err(status) if resumable(status.code()) => {
                    format!("{:?}: {}", status.code(), status.message())
                }
                Err(status) => return Err(ClusterError::rpc("Execute")(status)),
            };
            if name.is_empty() {
                return Err(ClusterError::Protocol(format!(
                    "dropped the Execute stream before naming its operation ({why})"
                )));
            }
            // Resume: WaitExecution on the named operation, with a growing pause, until it
            // answers or the resumptions run out.
            loop {
                resumes += 1;
                if resumes > MAX_RESUMES {
                    return Err(ClusterError::Protocol(format!(
                        "dropped operation {name} {MAX_RESUMES} times (last: {why})"
                    )));
                }
                progress(Progress::Resuming(why.clone()));
                let pause = Duration::from_millis(100 * u64::from(resumes)).min(MAX_RESUME_PAUSE);
                tokio::time::sleep(pause).await;
                match execution
                    .wait_execution(self.request(WaitExecutionRequest { name: name.clone() }))
                    .await
                {
                    Ok(resumed) => {
                        stream = resumed.into_inner();
                        break;
                    }
                    Err(status) if resumable(status.code()) => continue,
                    Err(status) if status.code() == Code::NotFound => {
                        return Err(ClusterError::OperationLost(name));
                    }
                    Err(status) => return Err(ClusterError::rpc("WaitExecution")(status)),
                }
            }
        }
    }

    /// Cancels an operation (CancelOperation).
    pub async fn cancel(&self, operation: &str) -> Result<(), ClusterError> {
        OperationsClient::new(self.channel.clone())
            .cancel_operation(self.request(CancelOperationRequest {
                name: operation.to_owned(),
            }))
            .await
            .map_err(ClusterError::rpc("CancelOperation"))?;
        Ok(())
    }
}

fn tls_config(connection: &Connection, host: &str) -> Result<ClientTlsConfig, ClusterError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| ClusterError::Io(path.display().to_string(), e))
    };
    let mut config = ClientTlsConfig::new().domain_name(host.to_owned());
    config = match &connection.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = &connection.identity {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(config)
}

/// Codes a dropped connection or a restarting server gives.
fn resumable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Aborted | Code::Cancelled
    )
}

fn stage_of(operation: &Operation) -> Option<Stage> {
    let metadata = operation.metadata.as_ref()?;
    let metadata = ExecuteOperationMetadata::decode(metadata.value.as_slice()).ok()?;
    Some(match execution_stage::Value::try_from(metadata.stage) {
        Ok(execution_stage::Value::CacheCheck) => Stage::CacheCheck,
        Ok(execution_stage::Value::Queued) => Stage::Queued,
        Ok(execution_stage::Value::Executing) => Stage::Executing,
        Ok(execution_stage::Value::Completed) => Stage::Completed,
        _ => Stage::Unknown,
    })
}

/// The result of a done operation.
fn finished(operation: Operation) -> Result<Executed, ClusterError> {
    match operation.result {
        Some(operation::Result::Error(status)) => Err(ClusterError::Rpc {
            call: "Execute",
            code: Code::from_i32(status.code),
            message: status.message,
        }),
        Some(operation::Result::Response(any)) => {
            let response = ExecuteResponse::decode(any.value.as_slice()).map_err(|e| {
                ClusterError::Protocol(format!("sent an ExecuteResponse that does not decode: {e}"))
            })?;
            if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
                return Err(ClusterError::Rpc {
                    call: "Execute",
                    code: Code::from_i32(status.code),
                    message: status.message.clone(),
                });
            }
            let result = response.result.ok_or_else(|| {
                ClusterError::Protocol("finished an operation without a result".into())
            })?;
            Ok(Executed {
                result,
                cached: response.cached_result,
                message: response.message,
            })
        }
        None => Err(ClusterError::Protocol(
            "finished an operation without a result".into(),
        )),
    }
}

/// A fresh upload id (random, in UUID form as servers expect).
fn upload_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn describe(blob: &Blob) -> String {
    match &blob.source {
        BlobSource::File(path) => path.display().to_string(),
        BlobSource::Bytes(_) => format!("blob {}", blob.digest.hash),
    }
}

/// An error with its causes, one after another.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: T) {}

    #[allow(dead_code)]
    fn futures_are_send(cluster: &super::Cluster, blobs: &[super::Blob], digest: &super::Digest) {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        assert_send(cluster.write_stream(&blobs[0]));
        assert_send(cluster.write_batch(Vec::new()));
        assert_send(cluster.upload_missing(blobs));
        assert_send(cluster.execute(digest, false, tx));
        assert_send(cluster.read_blobs(std::slice::from_ref(digest)));
        assert_send(cluster.cached_result(digest));
    }
}
