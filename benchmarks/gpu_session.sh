python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 || exit
python3 -m pytest -q tests/test_kernels.py -p no:cacheprovider 2>&1 | tail -3
python3 benchmarks/deflicker.py --speed --device cuda --warmup --opts '{"backend":"torch"}' --frames 32 | tail -1
python3 benchmarks/deflicker.py --speed --device cuda --warmup | tail -1
python3 benchmarks/deflicker.py --device cuda --frames 120 --warmup --modes table,window | tail -6
python3 benchmarks/deflicker.py --device cuda --frames 120 --modes table --window inf --clips bikes.mp4 | tail -1
timeout 330 python3 benchmarks/memory.py --frames 1000 --device cuda --fast --tmp /tmp
