//! The four stages that consume streams.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Chunking,
    Metadata,
    Embeddings,
    Storage,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Chunking, Stage::Metadata, Stage::Embeddings, Stage::Storage];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Chunking => "chunking",
            Stage::Metadata => "metadata",
            Stage::Embeddings => "embeddings",
            Stage::Storage => "storage",
        }
    }

    /// The stage of a name as [`Stage::name`] writes it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.name() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
