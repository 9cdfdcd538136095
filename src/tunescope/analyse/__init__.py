"""Weight analysis: where the weights moved (`diff`) and whether values or directions changed (`spectrum`).

    layout.py    tensor name + shape -> (layer, module) parts, fused GPT-2 / Phi-3 tensors split
    mapped.py    zero-copy row blocks of memory-mapped safetensors shards
    diff.py      rel_change / delta_fro / frac_changed per tensor part and checkpoint, summaries
    spectrum.py  singular values by rank, principal angles, projection distance, energy shares
    cli.py       `tunescope diff`, `tunescope spectrum`
"""
