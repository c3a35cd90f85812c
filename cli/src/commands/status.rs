//! `fulcrumctl status`

use fulcrum_proto::pb;
use serde_json::{Value, json};

use crate::client::AdminClient;
use crate::output::{self, Format, Table};

pub async fn run(client: &mut AdminClient, format: Format) -> anyhow::Result<()> {
    let status = client
        .get_status(pb::GetStatusRequest {})
        .await?
        .into_inner();
    if format == Format::Json {
        return output::print_json(&status_json(&status));
    }
    let total_keys = status.keys;
    let mut text = output::fields(&[
        ("revision", status.revision.to_string()),
        ("store id", output::or_dash(&status.store_id)),
        ("version", output::or_dash(&status.version)),
        ("providers", status.providers.to_string()),
        (
            "keys",
            format!(
                "{total_keys} ({})",
                output::key_counts_line(&status.key_counts)
            ),
        ),
        ("routes", status.routes.to_string()),
        ("client tokens", status.client_tokens.to_string()),
        ("data planes", status.data_planes.len().to_string()),
    ]);
    if !status.data_planes.is_empty() {
        text.push('\n');
        text.push_str(&data_planes_table(&status, output::now_unix_ms()).render());
    }
    output::print(&text)
}

/// `CN=dp-1 (dp-1.internal, spiffe://fulcrum/dp-1)`: what a verified client certificate
/// says the data plane is.
fn identity_text(identity: &pb::PeerIdentity) -> String {
    let mut text = if identity.common_name.is_empty() {
        "-".to_string()
    } else {
        format!("CN={}", identity.common_name)
    };
    if !identity.names.is_empty() {
        text.push_str(&format!(" ({})", identity.names.join(", ")));
    }
    text
}

fn data_planes_table(status: &pb::GetStatusResponse, now: i64) -> Table {
    // The identity column only when mutual TLS is on, so that plaintext setups see no
    // column of dashes.
    let with_identity = status
        .data_planes
        .iter()
        .any(|dp| dp.peer_identity.is_some());
    const HEADERS: [&str; 5] = ["NODE ID", "LISTEN ADDR", "APPLIED", "LAST ACK", "LAST NACK"];
    let mut table = if with_identity {
        let [a, b, c, d, e] = HEADERS;
        Table::new([a, b, c, d, e, "CLIENT CERT"])
    } else {
        Table::new(HEADERS)
    };
    for dp in &status.data_planes {
        let applied = if dp.applied_revision < status.revision {
            format!("{} (behind)", dp.applied_revision)
        } else {
            dp.applied_revision.to_string()
        };
        let nack = if dp.last_nack_unix_ms > 0 || !dp.last_nack_reason.is_empty() {
            format!(
                "{}: {}",
                output::ago(dp.last_nack_unix_ms, now),
                output::or_dash(&dp.last_nack_reason)
            )
        } else {
            "-".to_string()
        };
        let mut row = vec![
            dp.node_id.clone(),
            output::or_dash(&dp.listen_addr),
            applied,
            output::ago(dp.last_ack_unix_ms, now),
            nack,
        ];
        if with_identity {
            row.push(
                dp.peer_identity
                    .as_ref()
                    .map_or_else(|| "-".to_string(), identity_text),
            );
        }
        table.row(row);
    }
    table
}

fn status_json(status: &pb::GetStatusResponse) -> Value {
    let data_planes: Vec<Value> = status
        .data_planes
        .iter()
        .map(|dp| {
            json!({
                "node_id": dp.node_id,
                "version": dp.version,
                "listen_addr": dp.listen_addr,
                "peer_addr": dp.peer_addr,
                "connected_since_unix_ms": dp.connected_since_unix_ms,
                "last_sent_revision": dp.last_sent_revision,
                "last_sent_unix_ms": dp.last_sent_unix_ms,
                "applied_revision": dp.applied_revision,
                "last_ack_unix_ms": dp.last_ack_unix_ms,
                "last_nack_unix_ms": dp.last_nack_unix_ms,
                "last_nack_reason": dp.last_nack_reason,
                "peer_identity": dp.peer_identity.as_ref().map(|id| json!({
                    "common_name": id.common_name,
                    "names": id.names,
                })),
            })
        })
        .collect();
    json!({
        "revision": status.revision,
        "store_id": status.store_id,
        "version": status.version,
        "providers": status.providers,
        "keys": status.keys,
        "key_counts": output::key_counts_json(&status.key_counts),
        "routes": status.routes,
        "client_tokens": status.client_tokens,
        "data_planes": data_planes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_plane_rows_show_lag_and_nacks() {
        let status = pb::GetStatusResponse {
            revision: 9,
            data_planes: vec![
                pb::DataPlaneStatus {
                    node_id: "dp-1".into(),
                    listen_addr: "127.0.0.1:8000".into(),
                    applied_revision: 9,
                    last_ack_unix_ms: 7_000,
                    ..Default::default()
                },
                pb::DataPlaneStatus {
                    node_id: "dp-2".into(),
                    applied_revision: 7,
                    last_ack_unix_ms: 1_000,
                    last_nack_unix_ms: 8_000,
                    last_nack_reason: "route \"x\": unknown provider".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            data_planes_table(&status, 10_000).render(),
            "NODE ID  LISTEN ADDR     APPLIED     LAST ACK  LAST NACK\n\
             dp-1     127.0.0.1:8000  9           3s ago    -\n\
             dp-2     -               7 (behind)  9s ago    2s ago: route \"x\": unknown provider\n"
        );
        let json = status_json(&status);
        assert_eq!(json["data_planes"][1]["applied_revision"], 7);
        assert_eq!(json["data_planes"][1]["peer_identity"], Value::Null);
        assert_eq!(json["key_counts"]["active"], 0);
    }

    #[test]
    fn client_cert_column_only_with_mutual_tls() {
        let status = pb::GetStatusResponse {
            revision: 1,
            data_planes: vec![pb::DataPlaneStatus {
                node_id: "dp-1".into(),
                applied_revision: 1,
                last_ack_unix_ms: 9_000,
                peer_identity: Some(pb::PeerIdentity {
                    common_name: "dp-1".into(),
                    names: vec!["dp-1.internal".into(), "spiffe://fulcrum/dp-1".into()],
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            data_planes_table(&status, 10_000).render(),
            "NODE ID  LISTEN ADDR  APPLIED  LAST ACK  LAST NACK  CLIENT CERT\n\
             dp-1     -            1        1s ago    -          CN=dp-1 (dp-1.internal, spiffe://fulcrum/dp-1)\n"
        );
        let json = status_json(&status);
        assert_eq!(
            json["data_planes"][0]["peer_identity"]["common_name"],
            "dp-1"
        );
        assert_eq!(
            json["data_planes"][0]["peer_identity"]["names"][1],
            "spiffe://fulcrum/dp-1"
        );
    }
}
