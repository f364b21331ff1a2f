"""The cross-frame attention processor the engine used before session 10 (2026-11-22): it gathers the
pattern frames' hidden states and projects keys/values of all of them (K x the tokens). Kept so that
benchmarks can measure the current processor against it in one run."""

from diffusers.models.attention_processor import AttnProcessor2_0


class HiddenGather:
    def __init__(self, state):
        self.state, self.sdpa = state, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        idx = self.state.index
        if encoder_hidden_states is not None or idx is None or idx.shape[0] != hidden_states.shape[0]:
            return self.sdpa(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        b, n, c = hidden_states.shape
        idx = idx.to(hidden_states.device)
        ctx = hidden_states[idx.reshape(-1)].reshape(b, idx.shape[1] * n, c)
        return self.sdpa(attn, hidden_states, ctx, attention_mask, temb)


def use_former(models, state) -> None:
    """Give every self-attention layer of ``models`` the former processor."""
    for m in models:
        m.set_attn_processor({n: HiddenGather(state) if n.endswith("attn1.processor") else p
                              for n, p in m.attn_processors.items()})
