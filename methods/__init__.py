"""Method adapters: each turns GenRequests into images behind bench.types.Method."""
