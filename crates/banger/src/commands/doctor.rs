use banger_api::{DoctorCheck, DoctorStatus};

use crate::client::Client;
use crate::render::CliError;

/// Width of a check's text, so long probe results stay readable.
const DETAIL_COLUMNS: usize = 80;

/// Splits `text` into lines of at most `columns` characters at spaces; a
/// word longer than that gets a line of its own.
fn wrap(text: &str, columns: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in unbreakable_words(text) {
        let word = word.as_str();
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > columns {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Splits `text` at whitespace, keeping a number together with the unit
/// after it (`5.1 s`, `512 MiB`) so a wrap never separates them.
fn unbreakable_words(text: &str) -> Vec<String> {
    const UNITS: [&str; 9] = ["s", "ms", "KiB", "MiB", "GiB", "K", "M", "G", "%"];
    let mut words: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let unit = UNITS.contains(&word.trim_end_matches([',', ';', ':', '.', ')']));
        match words.last_mut() {
            Some(previous) if unit && previous.parse::<f64>().is_ok() => {
                previous.push(' ');
                previous.push_str(word);
            }
            _ => words.push(word.to_owned()),
        }
    }
    words
}

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
        let indent = " ".repeat(6 + width + 2);
        let mut lines = wrap(&check.detail, DETAIL_COLUMNS).into_iter();
        println!(
            "{mark}  {:<width$}  {}",
            check.name,
            lines.next().unwrap_or_default()
        );
        for line in lines {
            println!("{indent}{line}");
        }
        if let (Some(fix), false) = (&check.fix, check.status == DoctorStatus::Ok) {
            for (index, line) in wrap(&format!("fix: {fix}"), DETAIL_COLUMNS)
                .iter()
                .enumerate()
            {
                let pad = if index == 0 { "" } else { "     " };
                println!("{indent}{pad}{line}");
            }
        }
    }
    let failed = checks.iter().any(|c| c.status == DoctorStatus::Fail);
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_keeps_numbers_with_their_units() {
        assert_eq!(
            wrap("booted in 5.1 s: fine", 14),
            ["booted in", "5.1 s: fine"]
        );
        assert_eq!(wrap("free 512 MiB.", 9), ["free", "512 MiB."]);
        assert_eq!(wrap("step s", 4), ["step", "s"]);
    }

    #[test]
    fn wrap_breaks_at_spaces_within_the_width() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("short", 80), ["short"]);
        assert_eq!(wrap("", 80), [""]);
        assert_eq!(
            wrap("x averyveryverylongword y", 6),
            ["x", "averyveryverylongword", "y"]
        );
    }
}
