"""`bench arena`: pairwise judging of runs against each other (docs/judge.md, "Arena").

ask (the conversations and the verdict parser), match (pairs, asking with resume), rating
(Bradley–Terry, bootstrap, position bias), summary (the result's fields), cli (the command).
"""
