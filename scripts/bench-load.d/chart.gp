# scripts/bench-load's chart (drawn by chart.py): gnuplot -e "data='…'; out='…'; conns=16; n=6" chart.gp
# Left: throughput (req/s, log scale) at `conns` connections; right: p50 latency (ms, log scale)
# at one connection; per scenario, the gateway beside sekmet-fhir direct, or nginx and the bare
# proxy (static_upstream forward) over the static responder.
set terminal svg size 1000,440 dynamic font "sans,11" background rgb "white"
set output out
set multiplot layout 1,2
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set xtics rotate by -30 scale 0
set key top right
set xrange [-0.6:n - 0.4]
set title sprintf("Throughput, %d connections (req/s)", conns)
set yrange [10:*]
plot data using 2:xtic(1) title "direct / nginx" lc rgb "#7f7f7f", \
     '' using 6 title "bare proxy" lc rgb "#ff7f0e", \
     '' using 3 title "gateway" lc rgb "#1f77b4"
set title "Latency p50, 1 connection (ms)"
set yrange [0.05:*]
plot data using 4:xtic(1) title "direct / nginx" lc rgb "#7f7f7f", \
     '' using 7 title "bare proxy" lc rgb "#ff7f0e", \
     '' using 5 title "gateway" lc rgb "#1f77b4"
unset multiplot
