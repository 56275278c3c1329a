use millrace_embeddings::{Application, Config};

// The local model allocates and frees tens of MB per layer of every forward pass; glibc's malloc
// returns that memory to the kernel between passes and page-faults it back in (about a tenth of
// the pass's CPU time, measured). mimalloc keeps it mapped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    millrace_common::host::main("embeddings", Config::from_settings, Application::build)
}
