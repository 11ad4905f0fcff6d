//! Prints the AFS token aklog would get: `gettoken CELL [REALM] [CCACHE]`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cell) = args.first() else {
        eprintln!("usage: gettoken CELL [REALM|-] [CCACHE]");
        return ExitCode::from(2);
    };
    let realm = args.get(1).map(String::as_str).filter(|r| *r != "-");
    let ccache = args.get(2).map(String::as_str);
    match afs_krb5::default_realm() {
        Ok(r) => println!("default_realm     {r}"),
        Err(e) => println!("default_realm     error: {e}"),
    }
    let req = afs_krb5::Request {
        cell,
        realm,
        ccache,
    };
    match afs_krb5::get_token(&req) {
        Ok(t) => {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            println!("client_principal  {}", t.client_principal);
            println!("service_principal {}", t.service_principal);
            println!("kvno              {}", t.kvno);
            println!("enctype           {}", t.enctype);
            println!("session_key       {}", hex(&t.session_key));
            println!("start             {}", t.start);
            println!("end               {}", t.end);
            println!(
                "ticket            {} bytes: {}",
                t.ticket.len(),
                hex(&t.ticket)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {e}");
            println!("debug: {e:?}");
            ExitCode::FAILURE
        }
    }
}
