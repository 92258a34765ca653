"""What a 70B-teacher, 100k-prompt, 3-student run needs: GPU hours, storage, requests (see docs/scaling.md).

python -m bench.scaling_estimate [--prompts 100000] [--samples 1] [--prompt-tokens 400] [--completion-tokens 300]
                                 [--client-cpu-ms 0.2]

Arithmetic only, nothing is run: every input is printed with where it comes from. The
project's own figures are the measured ones in bench/README.md (replica scaling, bytes per
token) and the HTTP client's CPU per request (bench/http_concurrency.py prints it); the
hardware figures are NVIDIA's public H100 SXM numbers; the utilisation factors are
assumptions, stated, that a user replaces with a measured figure
(bench/vllm_vs_transformers.py on their GPU) before buying hours.
"""

from __future__ import annotations

import argparse

# Public hardware figures (NVIDIA H100 SXM datasheet).
H100_BF16_FLOPS = 989e12  # dense BF16 tensor-core peak
H100_HBM_BYTES_S = 3.35e12  # HBM3 bandwidth
# Model sizes (parameters, from the model cards).
TEACHER_PARAMS = 70.6e9  # Llama-3.1/3.3-70B
STUDENTS = {"llama-3.2-1b": 1.24e9, "llama-3.2-3b": 3.21e9, "llama-3.1-8b": 8.03e9}
# Assumptions (replace with measured ones).
TP = 4  # GPUs per teacher replica (tensor parallel): 141 GB of bf16 weights + KV cache on 4 x 80 GB
MAX_NUM_SEQS = 128  # sequences a replica decodes at once (vLLM --max-num-seqs)
DECODE_EFFICIENCY = 0.4  # share of the memory-bandwidth roofline decode reaches (KV reads, scheduling)
PREFILL_MFU = 0.5  # prefill is compute-bound
TRAIN_MFU = 0.4  # student training, bf16, DDP
EPOCHS = 3
EVAL_PROMPTS = 1500  # held-out prompts scored per model (3 tasks x 500)
# This project's measured figures (bench/README.md).
REPLICA_EFFICIENCY_8 = 7.61 / 8  # bench/replica_scaling.py: 8 replicas gave 7.61x one
CACHE_BYTES_PER_TOKEN = 5.7  # bench/storage_per_token.py, SQLite cache, text only
CACHE_BYTES_PER_TOKEN_TOP20 = 112.4  # ... with top-20 log-probs per token (int32 ids in 3 bytes, float16)
PARQUET_BYTES_PER_TOKEN = 1.6  # ... the frame, text only (synthetic text compresses well: a lower bound)
PARQUET_BYTES_PER_TOKEN_TOP20 = 89.7  # ... the frame with top-20 log-probs (random ids: an upper bound)
# bench/http_concurrency.py's "client CPU per request" at concurrency 32: 0.19-0.22 ms on the 2-core VM
CLIENT_CPU_MS_PER_REQUEST = 0.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=1, help="completions per prompt (rejection sampling: 4)")
    parser.add_argument("--prompt-tokens", type=int, default=400)
    parser.add_argument("--completion-tokens", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument(
        "--client-cpu-ms",
        type=float,
        default=CLIENT_CPU_MS_PER_REQUEST,
        help="the HTTP client's CPU per request, as bench/http_concurrency.py prints it (default: %(default)s, "
        "measured on the 2-core VM)",
    )
    args = parser.parse_args()

    requests = args.prompts * args.samples
    prompt_tokens, output_tokens = requests * args.prompt_tokens, requests * args.completion_tokens
    weights_bytes = TEACHER_PARAMS * 2  # bf16
    # Decode: every step reads the weights once for the whole batch (memory-bound).
    step_s = weights_bytes / (TP * H100_HBM_BYTES_S)
    replica_roofline = MAX_NUM_SEQS / step_s
    replica_tokens_s = replica_roofline * DECODE_EFFICIENCY
    decode_gpu_h = output_tokens / replica_tokens_s * TP / 3600
    prefill_gpu_h = 2 * TEACHER_PARAMS * prompt_tokens / (H100_BF16_FLOPS * PREFILL_MFU) / 3600
    eval_gpu_h = (decode_gpu_h + prefill_gpu_h) * EVAL_PROMPTS / requests
    generation_gpu_h = decode_gpu_h + prefill_gpu_h
    fleet_gpus = args.replicas * TP
    wall_h = generation_gpu_h / fleet_gpus / REPLICA_EFFICIENCY_8

    train_tokens = args.prompts * (args.prompt_tokens + args.completion_tokens) * EPOCHS  # one kept sample each
    train = {name: 6 * n * train_tokens / (H100_BF16_FLOPS * TRAIN_MFU) / 3600 for name, n in STUDENTS.items()}

    print("Inputs")
    print(f"  {args.prompts:,} prompts x {args.samples} sample(s): {requests:,} generation requests")
    print(f"  {args.prompt_tokens} prompt + {args.completion_tokens} completion tokens each: "
          f"{prompt_tokens / 1e6:.0f}M prompt, {output_tokens / 1e6:.0f}M generated tokens")  # fmt: skip
    print(f"  teacher 70.6B in bf16 = {weights_bytes / 1e9:.0f} GB; replica = TP {TP} x H100 SXM, "
          f"{MAX_NUM_SEQS} sequences at once")  # fmt: skip
    print("Generation (teacher)")
    print(f"  decode step >= {weights_bytes / 1e9:.0f} GB / ({TP} x 3.35 TB/s) = {step_s * 1e3:.1f} ms; "
          f"roofline {replica_roofline:,.0f} tokens/s per replica, x {DECODE_EFFICIENCY} = "
          f"{replica_tokens_s:,.0f} tokens/s")  # fmt: skip
    print(f"  decode  {output_tokens / 1e6:.0f}M tokens / {replica_tokens_s:,.0f} tokens/s x {TP} GPUs = "
          f"{decode_gpu_h:.1f} GPU-h")  # fmt: skip
    print(f"  prefill 2 x 70.6e9 x {prompt_tokens / 1e6:.0f}M / (989 TFLOPS x {PREFILL_MFU}) = "
          f"{prefill_gpu_h:.1f} GPU-h")  # fmt: skip
    print(f"  teacher eval ({EVAL_PROMPTS} prompts) {eval_gpu_h:.2f} GPU-h")
    print(f"  {args.replicas} replicas ({fleet_gpus} GPUs), {REPLICA_EFFICIENCY_8:.2f} scaling efficiency "
          f"(measured): {wall_h * 60:.0f} min wall")  # fmt: skip
    epoch_tokens = args.prompts * (args.prompt_tokens + args.completion_tokens)
    print(f"Training (students, {EPOCHS} epochs of {epoch_tokens / 1e6:.0f}M tokens, "
          f"6 x params x tokens at {TRAIN_MFU:.0%} MFU)")  # fmt: skip
    for name, hours in train.items():
        print(f"  {name}: {hours:.1f} GPU-h")
    total = generation_gpu_h + eval_gpu_h + sum(train.values())
    print(f"Total: {total:.0f} H100 GPU-hours")
    print("Requests")
    print(f"  {requests:,} generation + {EVAL_PROMPTS:,} teacher-eval requests; a rerun sends 0 (the cache); "
          f"client CPU {requests * args.client_cpu_ms / 1e3:.0f} s at {args.client_cpu_ms} ms per request "
          "(bench/http_concurrency.py)")  # fmt: skip
    print("Storage")
    students_gb = sum(STUDENTS.values()) * 4 / 1e9  # float32, as TRL saves a float32-loaded model
    print(f"  teacher weights {weights_bytes / 1e9:.0f} GB (per node that serves it); students {students_gb:.0f} GB "
          f"(float32 checkpoints)")  # fmt: skip
    print(f"  generation cache {output_tokens * CACHE_BYTES_PER_TOKEN / 1e9:.2f} GB text only, "
          f"{output_tokens * CACHE_BYTES_PER_TOKEN_TOP20 / 1e9:.0f} GB with top-20 log-probs")  # fmt: skip
    print(f"  frames (parquet) {output_tokens * PARQUET_BYTES_PER_TOKEN / 1e9:.2f} GB text only, "
          f"{output_tokens * PARQUET_BYTES_PER_TOKEN_TOP20 / 1e9:.1f} GB with top-20 log-probs")  # fmt: skip


if __name__ == "__main__":
    main()
