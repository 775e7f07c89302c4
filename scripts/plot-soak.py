#!/usr/bin/python3
"""Plots a soak run's samples (seconds, server RSS, connections) to a PNG.
usage: plot-soak.py SAMPLES.csv OUT.png"""
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open(sys.argv[1])))
t = [float(r["seconds"]) / 60 for r in rows]
rss = [int(r["server_rss_bytes"]) / 1048576 for r in rows]
conns = [int(r["connections"]) for r in rows]
fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
ax.plot(t, rss, color="tab:blue", marker=".", label="server RSS (MiB)")
ax.set_xlabel("minutes")
ax.set_ylabel("server RSS (MiB)", color="tab:blue")
ax.set_ylim(0, max(rss) * 1.3)
ax2 = ax.twinx()
ax2.plot(t, conns, color="tab:orange", label="connections")
ax2.set_ylabel("connections", color="tab:orange")
ax2.set_ylim(0, max(conns) * 1.3)
ax.set_title("tsugi-notifyd soak: steady traffic and churn")
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2])
