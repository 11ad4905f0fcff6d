//! `afsd-rs aklog`: a Kerberos 5 ticket for the cell's AFS service becomes an
//! rxkad token handed to the daemon, as OpenAFS's aklog does it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use afs_proto::pt::{NameToId, PT_PORT, PT_SERVICE_ID};
use client::CellDb;
use rx::{ClientSecurity, ConnKey, RxEndpoint};

use crate::control::{self, Request, Response};

/// The AFS id PT returns for unknown names (ANONYMOUSID).
const ANONYMOUS_ID: i32 = 32766;

pub struct Options<'a> {
    pub cell: Option<String>,
    pub realm: Option<String>,
    pub debug: bool,
    pub noprdb: bool,
    pub conf_dir: &'a Path,
    pub socket: &'a Path,
}

pub fn run(o: Options) -> Result<(), String> {
    let cells = CellDb::load(o.conf_dir).map_err(|e| e.to_string())?;
    let cell_name = match o.cell.or(cells.this_cell.clone()) {
        Some(c) => c.to_ascii_lowercase(),
        None => {
            let this_cell = o.conf_dir.join("ThisCell");
            return Err(format!(
                "no cell given and no local cell: {} {}; name the cell with -c CELL \
                 (one of the cells of {}), or write the local cell's name into {}",
                this_cell.display(),
                if this_cell.exists() {
                    "is empty"
                } else {
                    "does not exist"
                },
                o.conf_dir.join("CellServDB").display(),
                this_cell.display()
            ));
        }
    };
    let cell = cells
        .get(&cell_name)
        .ok_or_else(|| {
            format!(
                "cell {cell_name} is not in {}",
                o.conf_dir.join("CellServDB").display()
            )
        })?
        .clone();
    if o.debug {
        println!(
            "Authenticating to cell {} (server {}).",
            cell.name,
            cell.db_servers
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        if let Some(r) = &o.realm {
            println!("We were told to authenticate to realm {r}.");
        }
    }
    let token = afs_krb5::get_token(&afs_krb5::Request {
        cell: &cell.name,
        realm: o.realm.as_deref(),
        ccache: None,
    })
    .map_err(|e| e.to_string())?;
    if o.debug {
        println!("Getting tickets: {}", token.service_principal);
        println!("Using Kerberos V5 ticket natively");
    }
    let (user, realm) = token
        .client_principal
        .rsplit_once('@')
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .unwrap_or((token.client_principal.clone(), String::new()));
    // aklog's name rules: instances become dots, and a foreign realm stays.
    let mut name = user.replace('/', ".");
    if !realm.is_empty() && !realm.eq_ignore_ascii_case(&cell.name) {
        name = format!("{name}@{}", realm.to_ascii_lowercase());
    }
    let vice_id = if o.noprdb {
        0
    } else {
        if o.debug {
            println!("About to resolve name {name} to id in cell {}.", cell.name);
        }
        match pt_name_to_id(&cell.db_servers, &name) {
            Ok(id) => {
                if o.debug {
                    println!("Id {id}");
                }
                id
            }
            Err(e) => {
                eprintln!("aklog: could not resolve {name} to an AFS id in {} ({e}); using the token without one", cell.name);
                0
            }
        }
    };
    if o.debug {
        println!("Setting tokens. {name} @ {}", cell.name);
    }
    let req = Request::SetToken {
        cell: cell.name.clone(),
        vice_id,
        principal: token.client_principal.clone(),
        kvno: token.kvno,
        ticket: control::Secret(token.ticket.clone()),
        session_key: control::Secret(token.session_key),
        start: token.start,
        end: token.end,
    };
    match control::call(o.socket, &req)? {
        Response::Ok(_) => Ok(()),
        Response::Error(e) => Err(format!("the daemon refused the token: {e}")),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn pt_name_to_id(servers: &[std::net::Ipv4Addr], name: &str) -> Result<i32, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let config = rx::Config {
            dead_time: Duration::from_secs(10),
            ..rx::Config::default()
        };
        let (ep, _incoming) = RxEndpoint::bind("0.0.0.0:0".parse().map_err(|_| "bind")?, config)
            .map_err(|e| e.to_string())?;
        let mut last = String::from("no PT server");
        for ip in servers {
            let key = ConnKey {
                peer: SocketAddr::new((*ip).into(), PT_PORT),
                service_id: PT_SERVICE_ID,
                identity: 0,
                security: ClientSecurity::Null,
            };
            let req = afs_proto::encode_request(&NameToId {
                names: vec![name.to_string()],
            });
            match ep.call(key, req).await {
                Ok(reply) => {
                    let ids = <NameToId as afs_proto::Rpc>::decode_reply(&reply)
                        .map_err(|e| e.to_string())?;
                    return match ids.first() {
                        Some(&id) if id != ANONYMOUS_ID => Ok(id),
                        Some(_) => Err(format!("{name} is not in the protection database")),
                        None => Err("empty answer".to_string()),
                    };
                }
                Err(e) => last = format!("{ip}: {e}"),
            }
        }
        Err(last)
    })
}
