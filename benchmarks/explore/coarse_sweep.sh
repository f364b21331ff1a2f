S="python3 benchmarks/explore/coarse_sweep.py cuda"
for c in "carphone_pristine.mp4 120 0" "bikes.mp4 120 0" "carphone_distorted.mp4 120 0" "bigbuckbunny.mp4 120 640"; do
  $S $c 1 0 inf,60,31 draft,fast 15,31,63 0,0.01,0.02
done
$S carphone_pristine.mp4 120 0 0.5 0 inf,60 draft 31,63 0,0.01,0.02
$S carphone_pristine.mp4 120 0 1 0.04 inf,60 draft 31,63 0,0.01,0.02
$S bikes.mp4 120 0 0.5 0 inf,60 draft 31,63 0,0.01,0.02
