"""The hybrid language-model space (attention / sliding-window attention / Mamba2 / DeltaNet / FFN);
`ops` holds the token mixers in pure PyTorch, each with a chunked (parallel) form and a per-token
recurrent reference."""

from search_spaces.hybrid_lm import space  # noqa: F401  (registers "hybrid_lm")
