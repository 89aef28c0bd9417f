//! Shell words: the job scripts and the remote commands of `kiln ssh` are shell text, so every
//! value put into them is quoted.

/// `text` as one POSIX shell word: unchanged when it holds only safe characters, otherwise in
/// single quotes (a single quote inside becomes `'\''`).
pub fn quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Words joined into one command line, each quoted.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words.iter().map(|w| quote(w.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(quote("tcp://10.0.0.1:8786"), "tcp://10.0.0.1:8786");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(join(&["kiln", "worker", "x;rm -rf /"]), "kiln worker 'x;rm -rf /'");
    }

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let words = ["plain", "with space", "it's", "$HOME", "a\"b", "*", "back\\slash", ""];
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {}", join(&words)))
            .output()
            .unwrap();
        let got: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().split('\n').collect();
        assert_eq!(&got[..words.len()], &words[..]);
    }
}
