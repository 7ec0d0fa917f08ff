//! The floor a tokio proxy stands on, for `benches/instructions.sh`: each client
//! connection relayed byte for byte to one server address, on a current-thread runtime (as
//! switchyard with `worker_threads = 1`), with no protocol work at all.
//!
//! Usage: `tcp_relay LISTEN_ADDR SERVER_ADDR`

use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(server)) = (args.next(), args.next()) else {
        eprintln!("usage: tcp_relay LISTEN_ADDR SERVER_ADDR");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            let server = server.clone();
            tokio::spawn(async move {
                let relayed = async {
                    client.set_nodelay(true)?;
                    let mut upstream = TcpStream::connect(&server).await?;
                    upstream.set_nodelay(true)?;
                    tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                };
                if let Err(e) = relayed.await {
                    eprintln!("tcp_relay: {e}");
                }
            });
        }
    })
}
