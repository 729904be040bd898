use banger_api::{DoctorCheck, DoctorStatus};

use crate::client::Client;
use crate::render::CliError;

/// Prints every check; exits 1 when one failed (warnings pass).
pub async fn run() -> Result<u8, CliError> {
    let client = Client::connect().await?;
    let checks: Vec<DoctorCheck> = client.get("/doctor").await?;
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in &checks {
        let mark = match check.status {
            DoctorStatus::Ok => "ok  ",
            DoctorStatus::Warn => "warn",
            DoctorStatus::Fail => "FAIL",
        };
        println!("{mark}  {:<width$}  {}", check.name, check.detail);
        if let (Some(fix), false) = (&check.fix, check.status == DoctorStatus::Ok) {
            println!("      {:<width$}  fix: {fix}", "");
        }
    }
    let failed = checks.iter().any(|c| c.status == DoctorStatus::Fail);
    Ok(if failed { 1 } else { 0 })
}
