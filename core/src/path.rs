//! Entity paths `park/enterprise/workshop/line/equipment` (INDICATORS.md §1).

use std::fmt;

/// Level of an entity = depth of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Park = 1,
    Enterprise = 2,
    Workshop = 3,
    Line = 4,
    Equipment = 5,
}

impl Level {
    pub fn from_depth(d: usize) -> Option<Level> {
        Some(match d {
            1 => Level::Park,
            2 => Level::Enterprise,
            3 => Level::Workshop,
            4 => Level::Line,
            5 => Level::Equipment,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Park => "park",
            Level::Enterprise => "enterprise",
            Level::Workshop => "workshop",
            Level::Line => "line",
            Level::Equipment => "equipment",
        }
    }
}

/// A validated entity path: 1 to 5 non-empty segments of printable characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityPath(String);

impl EntityPath {
    pub fn parse(s: &str) -> Result<EntityPath, String> {
        Self::parse_max(s, 5)
    }

    /// A meter's id: an entity path, or one segment below a machine (its own meter).
    pub fn parse_meter(s: &str) -> Result<EntityPath, String> {
        Self::parse_max(s, 6)
    }

    fn parse_max(s: &str, max: usize) -> Result<EntityPath, String> {
        if s.is_empty() {
            return Err("entity path must not be empty".into());
        }
        let segs: Vec<&str> = s.split('/').collect();
        if segs.iter().any(|x| x.is_empty()) {
            return Err(format!("entity path \"{s}\" has an empty segment"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "entity path \"{s}\" contains white space or control characters"
            ));
        }
        if segs.len() > max {
            return Err(format!(
                "path \"{s}\" has {} segments; at most {max} (park/enterprise/workshop/line/equipment{})",
                segs.len(),
                if max > 5 { "/meter" } else { "" }
            ));
        }
        Ok(EntityPath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    pub fn level(&self) -> Level {
        // parse() guarantees 1..=5 segments (a meter path may have 6: it sits on a machine).
        Level::from_depth(self.depth().min(5)).unwrap_or(Level::Equipment)
    }

    /// `other` lies strictly below `self`.
    pub fn contains_strictly(&self, other: &EntityPath) -> bool {
        other.0.len() > self.0.len()
            && other.0.starts_with(&self.0)
            && other.0.as_bytes()[self.0.len()] == b'/'
    }

    /// The ancestor (or self) at `depth`, if the path is that deep.
    pub fn prefix(&self, depth: usize) -> Option<&str> {
        if depth == 0 || depth > self.depth() {
            return None;
        }
        let end = self
            .0
            .match_indices('/')
            .nth(depth - 1)
            .map_or(self.0.len(), |(i, _)| i);
        Some(&self.0[..end])
    }
}

impl fmt::Display for EntityPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The ancestor at `depth` of a raw id, used to group equipment and meters by enterprise.
pub fn ancestor(id: &str, depth: usize) -> Option<&str> {
    if depth == 0 {
        return None;
    }
    let segs = id.split('/').count();
    if segs < depth {
        return None;
    }
    let end = id
        .match_indices('/')
        .nth(depth - 1)
        .map_or(id.len(), |(i, _)| i);
    Some(&id[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels_and_prefixes() {
        let p = EntityPath::parse("p1/e1/w1/l1/cnc-01").unwrap();
        assert_eq!(p.level(), Level::Equipment);
        assert_eq!(p.prefix(2), Some("p1/e1"));
        assert_eq!(p.prefix(5), Some("p1/e1/w1/l1/cnc-01"));
        assert_eq!(p.prefix(6), None);
        let w = EntityPath::parse("p1/e1/w1").unwrap();
        assert!(w.contains_strictly(&p));
        assert!(!p.contains_strictly(&w));
        assert!(
            !EntityPath::parse("p1/e1/w1")
                .unwrap()
                .contains_strictly(&EntityPath::parse("p1/e1/w10").unwrap())
        );
        assert_eq!(ancestor("p1/e2/w1/x", 2), Some("p1/e2"));
        assert_eq!(ancestor("m1", 2), None);
    }

    #[test]
    fn rejects_bad_paths() {
        assert!(EntityPath::parse("").is_err());
        assert!(EntityPath::parse("p1//w1").is_err());
        assert!(EntityPath::parse("p1/e 1").is_err());
        assert!(EntityPath::parse("a/b/c/d/e/f").is_err());
    }
}
