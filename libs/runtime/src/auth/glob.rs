//! The glob patterns of authorization grants: `*` matches any run of characters (also none),
//! `?` exactly one character, anything else itself. Names are short (at most 128 characters),
//! so the matcher is the classic backtracking one: linear in practice, quadratic at worst.

/// A glob pattern (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The pattern as written in the policy file, as characters so `?` is one character.
    pattern: Vec<char>,
}

impl Glob {
    /// The pattern `text`; every string is a valid pattern.
    pub fn new(text: &str) -> Self {
        Self { pattern: text.chars().collect() }
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (p, n) = (&self.pattern, &name);
        let (mut pi, mut ni) = (0, 0);
        // Where the last `*` was, and the name position it is currently taken to end at.
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            match p.get(pi) {
                Some('*') => {
                    star = Some((pi, ni));
                    pi += 1;
                }
                Some(&c) if c == '?' || c == n[ni] => {
                    pi += 1;
                    ni += 1;
                }
                _ => match star {
                    // Let the last `*` take one more character and try again after it.
                    Some((sp, sn)) => {
                        star = Some((sp, sn + 1));
                        pi = sp + 1;
                        ni = sn + 1;
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).matches(name)
    }

    #[test]
    fn literals_match_only_themselves() {
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders2"));
        assert!(!m("orders", "order"));
        assert!(m("", ""));
        assert!(!m("", "x"));
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(m("*", ""));
        assert!(m("*", "anything.at-all"));
        assert!(m("orders.*", "orders."));
        assert!(m("orders.*", "orders.eu"));
        assert!(!m("orders.*", "orders"));
        assert!(!m("orders.*", "payments.eu"));
        assert!(m("*-dlq", "billing-dlq"));
        assert!(!m("*-dlq", "billing-dlq2"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("a**b", "ab"));
        assert!(m("*a*a*a*b", "aaaaaaaaaaaaaaaaaaab"));
        assert!(!m("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(m("v?", "v1"));
        assert!(!m("v?", "v"));
        assert!(!m("v?", "v12"));
        assert!(m("?*", "x"));
        assert!(!m("?*", ""));
        assert!(m("é?", "éü"), "characters, not bytes");
    }
}
