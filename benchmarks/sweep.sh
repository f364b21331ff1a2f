# Quality against PatchMatch effort and flicker strength, table mode, window 15, 120 frames (GPU).
# bash benchmarks/sweep.sh  (PYTHONPATH must reach src and the carried wheels)
B="python3 benchmarks/deflicker.py --device cuda --frames 120 --modes table --clips bikes.mp4,carphone_pristine.mp4"
for o in '{}' '{"iterations": 10}' '{"search_radius": 64}' '{"samples": 5}' '{"guide_weight": 50}' \
         '{"iterations": 10, "search_radius": 64, "samples": 5}'; do
  $B --opts "$o" | grep '^| [bc]'
done
for s in 0.5 2; do $B --strength $s | grep '^| [bc]'; done
