# Short judge texts of this project's own, with the constant names of OmniGen2's
# omnicontext/prompt_generator.py, for the smoke run and tests (docs/judge.md). They are read as
# data (parsed, never run). Real runs read the OmniGen2 repository's own file.

_context_no_delimit = """You rate one generated image against reference images.
Answer as JSON: {"score": <0-10>, "reasoning": "..."}
"""

_prompts_0shot_in_context_generation_rule_PF_Single_and_Multiple = """
Score 0-10: how fully does the last image carry out the instruction? Ignore who or what appears.
Instruction: <instruction>
"""

_prompts_0shot_in_context_generation_rule_PF_Scene = """
Score 0-10: how fully does the last image carry out the instruction? Ignore identities and the setting.
Instruction: <instruction>
"""

_prompts_0shot_in_context_generation_rule_SC_Single_and_Multiple = """
Score 0-10: are the subjects in the last image the same ones as in the reference images?
Instruction: <instruction>
"""

_prompts_0shot_in_context_generation_rule_SC_Scene = """
Score 0-10: are the subjects and the setting in the last image the ones of the reference images?
Instruction: <instruction>
"""
