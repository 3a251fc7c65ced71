//! The Rakefile: its lexer and parser, with errors that name the file, line and column, say
//! what was expected, and show the line with a caret under the fault.
//!
//! ```text
//! # comments start a line (after any indentation)
//! PORT  = 6238                    # the port of hosts named without one (default 6238)
//! HOSTS = build1 build2:6333      # where remote actions may go
//! # or: HOSTS = reapi://HOST:PORT[/INSTANCE] (reapis:// for TLS): a remote-execution cluster
//!
//! actionset1:
//! <TAB>remote-cc -c square.c        # an action; `remote-` sends it to a host
//! <TAB><TAB>requires square.c util.h  # files it needs, sent with it
//! <TAB>echo local                   # an action run on the local daemon
//!
//! actionset2:
//! <TAB>remote-cc -o program square.o
//! <TAB><TAB>requires square.o
//! ```
//!
//! Sets run in order, the actions of a set together. Sets are numbered from 1, in order;
//! a set holds at least one action; indentation is tabs (one for an action, two for its
//! `requires`); blank lines are ignored anywhere. A `#` starts a comment at the start of a
//! line, and after white space on a `NAME = VALUE` or `requires` line (host and file names
//! hold no ` #`); in an action, where a shell would take it (a word starting with `#`
//! outside quotes: `echo 'a #b' # comment` keeps `'a #b'`, and `echo a#b` stays whole).

use std::fmt;

/// The port of a host named without one, when the Rakefile has no `PORT` line.
pub const DEFAULT_PORT: u16 = 6238;

/// A parsed Rakefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakefile {
    /// The `PORT` line's port, or [`DEFAULT_PORT`].
    pub port: u16,
    /// The `HOSTS` line's hosts, each with its port.
    pub hosts: Vec<Host>,
    /// The `HOSTS` line's remote-execution cluster (`reapi://HOST:PORT[/INSTANCE]` or
    /// `reapis://...` for TLS), when it names one instead of hosts.
    pub cluster: Option<String>,
    /// The action sets, in order.
    pub sets: Vec<ActionSet>,
}

/// A host remote actions may go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host {
    /// Its name or address.
    pub name: String,
    /// Its port.
    pub port: u16,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.contains(':') {
            write!(f, "[{}]:{}", self.name, self.port)
        } else {
            write!(f, "{}:{}", self.name, self.port)
        }
    }
}

/// One `actionsetN:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSet {
    /// Its name (`actionset1`...).
    pub name: String,
    /// Its actions, in the file's order.
    pub actions: Vec<Action>,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The command line (run by `sh -c`), without the `remote-` prefix.
    pub command: String,
    /// It goes to a host (`remote-`), not the local daemon.
    pub remote: bool,
    /// The files it needs, relative to the Rakefile's directory.
    pub requires: Vec<String>,
    /// Its line in the Rakefile.
    pub line: usize,
}

/// Why a Rakefile cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RakefileError {
    /// The file.
    pub path: String,
    /// The line (from 1).
    pub line: usize,
    /// The column (from 1, in characters; a tab counts one).
    pub column: usize,
    /// What was expected there.
    pub expected: String,
    /// The offending line.
    pub text: String,
}

impl fmt::Display for RakefileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: expected {}",
            self.path, self.line, self.column, self.expected
        )?;
        // Tabs are shown as arrows so that the caret lines up whatever the terminal's tab
        // width.
        let shown: String = self
            .text
            .chars()
            .map(|c| if c == '\t' { '→' } else { c })
            .collect();
        let gutter = format!("{} | ", self.line);
        writeln!(f, "{gutter}{shown}")?;
        write!(
            f,
            "{}^",
            " ".repeat(gutter.chars().count() + self.column.saturating_sub(1))
        )
    }
}

/// One line, as the lexer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// A blank line, or a comment.
    Blank,
    /// `NAME = VALUE` at the top level (`value_column` is where the value starts).
    Assignment {
        name: &'a str,
        value: &'a str,
        value_column: usize,
    },
    /// `actionsetN:` (`number` as written).
    SetHeader { number: &'a str },
    /// A line indented by one tab.
    Action { text: &'a str },
    /// A line indented by two tabs.
    Nested { text: &'a str },
    /// Anything else at the top level.
    Other,
}

/// Reads one line: its token, or an error about its indentation.
fn lex(line: &str) -> Result<Token<'_>, (usize, String)> {
    let indent: String = line
        .chars()
        .take_while(|c| *c == '\t' || *c == ' ')
        .collect();
    let rest = &line[indent.len()..];
    if rest.trim().is_empty() || rest.starts_with('#') {
        return Ok(Token::Blank);
    }
    if let Some(space) = indent.find(' ') {
        return Err((
            space + 1,
            "a tab (actions are indented by one tab, their `requires` by two), not a space".into(),
        ));
    }
    match indent.len() {
        0 => Ok(top_level(rest)),
        1 => Ok(Token::Action {
            text: without_shell_comment(rest),
        }),
        2 => Ok(Token::Nested {
            text: without_comment(rest),
        }),
        _ => Err((
            3,
            "at most two tabs (one for an action, two for its `requires`)".into(),
        )),
    }
}

/// `text` without a trailing comment: from a `#` that starts it or follows white space.
fn without_comment(text: &str) -> &str {
    let cut = text
        .char_indices()
        .find(|&(i, c)| {
            c == '#'
                && text[..i]
                    .chars()
                    .next_back()
                    .is_none_or(char::is_whitespace)
        })
        .map_or(text.len(), |(i, _)| i);
    text[..cut].trim_end()
}

/// An action's command without its trailing comment, as a shell reads one: a `#` that starts
/// a word outside quotes (so that a server that runs commands without a shell, as rake64's
/// do, never gets the comment as arguments).
fn without_shell_comment(text: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    let mut word_start = true;
    for (i, c) in text.char_indices() {
        let literal = escaped;
        match (quote, c) {
            _ if escaped => escaped = false,
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('"'), '\\') | (None, '\\') => escaped = true,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if word_start => return text[..i].trim_end(),
            _ => {}
        }
        word_start = quote.is_none() && !literal && c.is_whitespace();
    }
    text.trim_end()
}

/// A top-level line.
fn top_level(line: &str) -> Token<'_> {
    if let Some((name, value)) = line.split_once('=') {
        let name = name.trim();
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let value_column = line.len() - value.trim_start().len() + 1;
            return Token::Assignment {
                name,
                value: without_comment(value.trim()),
                value_column,
            };
        }
    }
    let trimmed = line.trim_end();
    if let Some(number) = trimmed
        .strip_prefix("actionset")
        .and_then(|rest| rest.strip_suffix(':'))
    {
        return Token::SetHeader { number };
    }
    Token::Other
}

/// Parses the Rakefile text `source` (read from `path`, named in errors).
pub fn parse(path: &str, source: &str) -> Result<Rakefile, RakefileError> {
    parse_inner(path, source, true)
}

/// Parses the Rakefile text `source` for a run whose remote actions go to a cluster named
/// elsewhere (`ferry rake --reapi`): remote actions need no `HOSTS` line.
pub fn parse_for_cluster(path: &str, source: &str) -> Result<Rakefile, RakefileError> {
    parse_inner(path, source, false)
}

fn parse_inner(path: &str, source: &str, hosts_required: bool) -> Result<Rakefile, RakefileError> {
    Parser {
        path,
        hosts_required,
        port: None,
        hosts: None,
        cluster: None,
        sets: Vec::new(),
        first_remote: None,
    }
    .run(source)
}

/// A host as the `HOSTS` line writes it: its name, and its own port if it has one.
type WrittenHost = (String, Option<u16>);

struct Parser<'a> {
    path: &'a str,
    /// Remote actions need a `HOSTS` line.
    hosts_required: bool,
    /// The port, and the line that set it.
    port: Option<(u16, usize)>,
    /// The hosts as written (resolved against the port at the end), and their line.
    hosts: Option<(Vec<WrittenHost>, usize)>,
    /// The cluster a `HOSTS = reapi://...` line names.
    cluster: Option<String>,
    sets: Vec<(ActionSet, usize, String)>,
    /// The first remote action's line and text (for "remote actions need HOSTS").
    first_remote: Option<(usize, String)>,
}

impl Parser<'_> {
    fn error(
        &self,
        line: usize,
        column: usize,
        expected: impl Into<String>,
        text: &str,
    ) -> RakefileError {
        RakefileError {
            path: self.path.to_owned(),
            line,
            column,
            expected: expected.into(),
            text: text.to_owned(),
        }
    }

    fn run(mut self, source: &str) -> Result<Rakefile, RakefileError> {
        for (index, text) in source.lines().enumerate() {
            let number = index + 1;
            let text = text.strip_suffix('\r').unwrap_or(text);
            let token = lex(text)
                .map_err(|(column, expected)| self.error(number, column, expected, text))?;
            self.line(number, text, token)?;
        }
        self.finish()
    }

    fn line(&mut self, number: usize, text: &str, token: Token<'_>) -> Result<(), RakefileError> {
        match token {
            Token::Blank => {}
            Token::Assignment {
                name: "PORT",
                value,
                value_column,
            } => {
                if let Some((_, first)) = self.port {
                    return Err(self.error(
                        number,
                        1,
                        format!("one PORT line (the first is line {first})"),
                        text,
                    ));
                }
                let port = port_number(value).ok_or_else(|| {
                    self.error(
                        number,
                        value_column,
                        "a port number (1 to 65535) after `PORT =`",
                        text,
                    )
                })?;
                self.port = Some((port, number));
            }
            Token::Assignment {
                name: "HOSTS",
                value,
                value_column,
            } => {
                if let Some((_, first)) = self.hosts {
                    return Err(self.error(
                        number,
                        1,
                        format!("one HOSTS line (the first is line {first})"),
                        text,
                    ));
                }
                if value.starts_with("reapi://") || value.starts_with("reapis://") {
                    self.cluster = Some(self.cluster_of(number, text, value, value_column)?);
                    self.hosts = Some((Vec::new(), number));
                } else {
                    let hosts = self.hosts_of(number, text, value, value_column)?;
                    self.hosts = Some((hosts, number));
                }
            }
            Token::Assignment { name, .. } => {
                return Err(self.error(
                    number,
                    1,
                    format!(
                        "`PORT = N`, `HOSTS = HOST...` or `actionsetN:`, not a setting `{name}`"
                    ),
                    text,
                ));
            }
            Token::SetHeader { number: written } => {
                let wanted = self.sets.len() + 1;
                if written != wanted.to_string() {
                    return Err(self.error(
                        number,
                        10,
                        format!("actionset{wanted}: (sets are numbered from 1, in order)"),
                        text,
                    ));
                }
                if let Some((set, line, header)) = self.sets.last() {
                    if set.actions.is_empty() {
                        return Err(self.error(
                            *line,
                            1,
                            format!("at least one action in {}", set.name),
                            header,
                        ));
                    }
                }
                let set = ActionSet {
                    name: format!("actionset{wanted}"),
                    actions: Vec::new(),
                };
                self.sets.push((set, number, text.to_owned()));
            }
            Token::Action { text: action } => self.action(number, text, action)?,
            Token::Nested { text: nested } => self.requires(number, text, nested)?,
            Token::Other => {
                let expected = if text.starts_with("actionset") {
                    "`:` at the end of the set's line (`actionsetN:`)".to_owned()
                } else {
                    "`PORT = N`, `HOSTS = HOST...` or `actionsetN:` (actions are indented by one tab)".to_owned()
                };
                let column = if text.starts_with("actionset") {
                    text.trim_end().chars().count() + 1
                } else {
                    1
                };
                return Err(self.error(number, column, expected, text));
            }
        }
        Ok(())
    }

    /// A `reapi://HOST:PORT[/INSTANCE]` (or `reapis://`) value, checked.
    fn cluster_of(
        &self,
        number: usize,
        text: &str,
        value: &str,
        value_column: usize,
    ) -> Result<String, RakefileError> {
        let value = value.trim_end();
        if let Some(space) = value.find(' ') {
            return Err(self.error(
                number,
                value_column + value[..space].chars().count(),
                "nothing after the cluster's URL (one cluster, no hosts beside it)",
                text,
            ));
        }
        let scheme_len = value.find("://").map_or(0, |at| at + 3);
        let rest = &value[scheme_len..];
        let authority = rest.split('/').next().unwrap_or_default();
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port_number(port).is_some());
        if !port_ok {
            return Err(self.error(
                number,
                value_column + scheme_len,
                "HOST:PORT after `reapi://` (then an optional /INSTANCE)",
                text,
            ));
        }
        Ok(value.to_owned())
    }

    fn hosts_of(
        &self,
        number: usize,
        text: &str,
        value: &str,
        value_column: usize,
    ) -> Result<Vec<WrittenHost>, RakefileError> {
        let mut hosts = Vec::new();
        let mut column = value_column;
        for word in value.split(' ') {
            if word.is_empty() {
                column += 1;
                continue;
            }
            let host = match word.rsplit_once(':') {
                // [v6]:port, or name:port
                Some((name, port))
                    if !name.ends_with(':') && (!name.contains(':') || name.starts_with('[')) =>
                {
                    let port = port_number(port).ok_or_else(|| {
                        self.error(
                            number,
                            column + name.chars().count() + 1,
                            "a port number (1 to 65535) after the host's `:`",
                            text,
                        )
                    })?;
                    (
                        name.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                        Some(port),
                    )
                }
                _ => (
                    word.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    None,
                ),
            };
            if host.0.is_empty() {
                return Err(self.error(number, column, "a host name before `:`", text));
            }
            hosts.push(host);
            column += word.chars().count() + 1;
        }
        if hosts.is_empty() {
            return Err(self.error(
                number,
                value_column,
                "at least one host after `HOSTS =`",
                text,
            ));
        }
        Ok(hosts)
    }

    fn action(&mut self, number: usize, text: &str, action: &str) -> Result<(), RakefileError> {
        if self.sets.is_empty() {
            return Err(self.error(
                number,
                2,
                "an `actionsetN:` line before the first action",
                text,
            ));
        }
        let (remote, command) = match action.strip_prefix("remote-") {
            Some(command) => (true, command.trim()),
            None => (false, action),
        };
        if command.is_empty() {
            return Err(self.error(
                number,
                2 + "remote-".len(),
                "a command after `remote-`",
                text,
            ));
        }
        if remote && self.first_remote.is_none() {
            self.first_remote = Some((number, text.to_owned()));
        }
        if let Some((set, _, _)) = self.sets.last_mut() {
            set.actions.push(Action {
                command: command.to_owned(),
                remote,
                requires: Vec::new(),
                line: number,
            });
        }
        Ok(())
    }

    fn requires(&mut self, number: usize, text: &str, nested: &str) -> Result<(), RakefileError> {
        let Some(files) = nested.strip_prefix("requires") else {
            return Err(self.error(
                number,
                3,
                "`requires FILE...` (a line indented by two tabs lists its action's files)",
                text,
            ));
        };
        if !files.is_empty() && !files.starts_with([' ', '\t']) {
            return Err(self.error(
                number,
                3,
                "`requires FILE...` (a line indented by two tabs lists its action's files)",
                text,
            ));
        }
        let has_action = self
            .sets
            .last()
            .is_some_and(|(set, _, _)| !set.actions.is_empty());
        if !has_action {
            return Err(self.error(number, 3, "an action before its `requires` line", text));
        }
        // The column of each word: after the two tabs and `requires`.
        let mut column = 3 + "requires".len();
        let mut names = Vec::new();
        for word in files.split([' ', '\t']) {
            let at = column;
            column += word.chars().count() + 1;
            if word.is_empty() {
                continue;
            }
            if let Err(why) = relative_name(word) {
                return Err(self.error(
                    number,
                    at,
                    format!("a file inside this directory ({why})"),
                    text,
                ));
            }
            names.push(word.to_owned());
        }
        if names.is_empty() {
            return Err(self.error(
                number,
                text.chars().count() + 1,
                "at least one file after `requires`",
                text,
            ));
        }
        if let Some((set, _, _)) = self.sets.last_mut() {
            if let Some(action) = set.actions.last_mut() {
                if !action.requires.is_empty() {
                    return Err(self.error(
                        number,
                        3,
                        "one `requires` line per action (list every file on it)",
                        text,
                    ));
                }
                action.requires = names;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Rakefile, RakefileError> {
        if let Some((set, line, header)) = self.sets.last() {
            if set.actions.is_empty() {
                return Err(self.error(
                    *line,
                    1,
                    format!("at least one action in {}", set.name),
                    header,
                ));
            }
        }
        if let (Some((line, text)), None, true) =
            (&self.first_remote, &self.hosts, self.hosts_required)
        {
            return Err(self.error(
                *line,
                2,
                "a `HOSTS = HOST...` line: remote actions go to its hosts",
                text,
            ));
        }
        let port = self.port.map_or(DEFAULT_PORT, |(port, _)| port);
        let hosts = self
            .hosts
            .map(|(hosts, _)| {
                hosts
                    .into_iter()
                    .map(|(name, own)| Host {
                        name,
                        port: own.unwrap_or(port),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Rakefile {
            port,
            hosts,
            cluster: self.cluster,
            sets: self.sets.into_iter().map(|(set, _, _)| set).collect(),
        })
    }
}

/// A port number from 1 to 65535.
fn port_number(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p > 0)
}

/// Checks that a required file's name stays inside the Rakefile's directory.
pub fn relative_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with('/') {
        return Err("not an absolute path");
    }
    if name.split('/').any(|part| part == "..") {
        return Err("no `..`");
    }
    Ok(())
}

impl Rakefile {
    /// The plan, as `ferry rake -n` prints it.
    pub fn plan(&self) -> String {
        let mut out = String::new();
        if let Some(cluster) = &self.cluster {
            out.push_str(&format!("cluster: {cluster}\n"));
        }
        if !self.hosts.is_empty() {
            let hosts: Vec<String> = self.hosts.iter().map(Host::to_string).collect();
            out.push_str(&format!("hosts: {}\n", hosts.join(" ")));
        }
        for set in &self.sets {
            out.push_str(&format!(
                "{} ({} action(s), run together):\n",
                set.name,
                set.actions.len()
            ));
            for action in &set.actions {
                let place = if action.remote { "remote" } else { "local " };
                out.push_str(&format!("  {place}  {}\n", action.command));
                if !action.requires.is_empty() {
                    out.push_str(&format!(
                        "          requires {}\n",
                        action.requires.join(" ")
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
