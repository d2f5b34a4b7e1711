//! The producer under test, started in-process on a listener of its own.

#![allow(dead_code)]

use std::time::Duration;

use producer::Config;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use service_kit::Secret;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-123";

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub shutdown: CancellationToken,
}

impl Api {
    /// A producer on topics of its own (a prefix named after `test`).
    pub async fn start(test: &str) -> Api {
        Api::start_with(Config {
            kafka: test_kit::kafka_settings(test),
            api_token: Secret::new(TOKEN),
            master_key: Secret::new(test_kit::MASTER_KEY),
            admin_addr: "127.0.0.1:0".to_owned(),
            ..Config::default()
        })
        .await
    }

    /// A producer with `config` (another replica: the same config).
    pub async fn start_with(config: Config) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API");
        let base = format!("http://{}", listener.local_addr().expect("its address"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(producer::serve(config.clone(), listener, shutdown.clone()));
        let api = Api {
            base,
            client: reqwest::Client::new(),
            config,
            shutdown,
        };
        for _ in 0..600 {
            if task.is_finished() {
                panic!("producer stopped: {:?}", task.await);
            }
            if api
                .client
                .get(format!("{}/health", api.base))
                .send()
                .await
                .is_ok()
            {
                return api;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("producer did not start");
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.call_with(method, path, &[], body).await;
        (status, body)
    }

    /// A call with extra request headers; also returns the response's headers.
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the API answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("a body");
        (
            status,
            headers,
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            },
        )
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
