//! What the llm-gateway charges to a job: the tokens and cost of its LLM calls, added to the
//! job's record, whose fields this crate owns (`Job::llm` reads them back).

use crate::scripts::ADD_LLM_USAGE;
use crate::{Keys, LlmUsage};

/// Adds each job's usage to its record within `pipe`, once per job given (a repeated call adds
/// again: charges are sums, not hand-offs). A job whose record does not exist (a stray or
/// expired id) gets nothing and no record. The script's answers are ignored, so the caller's
/// pipeline answers only its own commands.
pub fn add_llm_usage<'a>(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    charges: impl IntoIterator<Item = (&'a str, LlmUsage)>,
) {
    let mut charges = charges.into_iter().peekable();
    if charges.peek().is_none() {
        return;
    }
    // A pipelined script must be loaded first (Redis may have restarted since).
    pipe.load_script(&ADD_LLM_USAGE).ignore();
    for (job_id, usage) in charges {
        let mut invocation = ADD_LLM_USAGE.prepare_invoke();
        invocation.key(keys.job(job_id)).arg(usage.prompt_tokens).arg(usage.completion_tokens).arg(usage.cost_usd);
        pipe.invoke_script(&invocation).ignore();
    }
}
