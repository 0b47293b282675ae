//! tonic's hello-world (`helloworld.Greeter/SayHello`), server and client, written out by hand:
//! what `tonic-build` would generate from `helloworld.proto`, without a protoc step. The
//! messages are prost messages, the codec is tonic's `ProstCodec`, and the server is tonic's
//! own `Server` (hyper and h2 underneath) on a multi-thread tokio runtime, as the example's
//! `#[tokio::main]` makes it.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use anyhow::Context as _;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The method's path, as gRPC names it.
const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The example's `MyGreeter`: `Hello {name}!`.
fn say_hello(request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
    Ok(Response::new(HelloReply { message: format!("Hello {}!", request.into_inner().name) }))
}

/// The generated `GreeterServer`: routes a request by path to its method.
#[derive(Clone, Debug)]
struct Greeter;

impl NamedService for Greeter {
    const NAME: &'static str = "helloworld.Greeter";
}

impl<B> tower::Service<http::Request<B>> for Greeter
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SAY_HELLO {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        Box::pin(async move {
            let method = tower::service_fn(|r| std::future::ready(say_hello(r)));
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// `warren bench tonic-hello`: serve the greeter on `listen` until killed, announcing the
/// address as warren's servers do, so the bench starts it like any of them.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        // As `Server::serve(addr)` binds: TCP_NODELAY on every connection.
        let incoming = TcpIncoming::bind(listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?
            .with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        println!("warren: serving tonic's hello-world (gRPC) on {addr}");
        std::io::stdout().flush()?;
        tonic::transport::Server::builder()
            .add_service(Greeter)
            .serve_with_incoming(incoming)
            .await
            .context("the tonic server stopped")
    })
}

/// The generated `GreeterClient`, one call: `SayHello` over a channel (one HTTP/2 connection,
/// calls multiplexed as streams).
#[derive(Clone, Debug)]
pub struct GreeterClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl GreeterClient {
    /// One HTTP/2 connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<GreeterClient> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            .with_context(|| format!("cannot reach tonic at {addr}"))?;
        Ok(GreeterClient { grpc: tonic::client::Grpc::new(channel) })
    }

    pub async fn say_hello(&mut self, name: &str) -> Result<String, Status> {
        self.grpc.ready().await.map_err(|e| Status::unknown(format!("the channel is not ready: {e}")))?;
        let request = Request::new(HelloRequest { name: name.to_owned() });
        let path = http::uri::PathAndQuery::from_static(SAY_HELLO);
        let reply = self.grpc.unary(request, path, ProstCodec::<HelloRequest, HelloReply>::default()).await?;
        Ok(reply.into_inner().message)
    }
}
