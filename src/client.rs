//! A small client for a gateway's local API, over one kept-alive HTTP/1.1 connection.
//! The demo, the benchmark and the tests use it the way a HIS would.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub struct LocalApiClient {
    addr: SocketAddr,
    token: String,
    user: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl LocalApiClient {
    pub fn new(addr: SocketAddr, token: &str, user: &str) -> LocalApiClient {
        LocalApiClient {
            addr,
            token: token.to_string(),
            user: user.to_string(),
            sender: None,
        }
    }

    pub async fn get(&mut self, path: &str) -> Result<(u16, Value), String> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        self.call(Method::POST, path, Some(bytes)).await
    }

    /// Posts JSON and returns the answer's bytes as they came (`store backup`).
    pub async fn post_for_bytes(
        &mut self,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Bytes), String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let auth = format!("Bearer {}", self.token);
        let user = self.user.clone();
        let headers = [
            ("authorization", auth.as_str()),
            ("x-wijkpoort-user", user.as_str()),
            ("content-type", "application/json"),
        ];
        self.exchange(Method::POST, path, &headers, bytes).await
    }

    /// Sends raw bytes with chosen headers (tests of malformed input and auth).
    pub async fn call_raw(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Value), String> {
        let (status, bytes) = self.exchange(method, path, headers, body).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| format!("answer is not JSON: {e}"))?
        };
        Ok((status, value))
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), String> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string());
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let sender = self.connection().await?;
        let response = sender.send_request(request).await.map_err(|e| {
            self.sender = None;
            e.to_string()
        })?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value), String> {
        let auth = format!("Bearer {}", self.token);
        let user = self.user.clone();
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("x-wijkpoort-user", user.as_str()),
        ];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.call_raw(method, path, &headers, body.unwrap_or_default())
            .await
    }

    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let reusable = match &mut self.sender {
            Some(s) => !s.is_closed() && s.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }
}
