"""check_curves_svg.py: reads a run folder's curves.svg with xml.etree (it must be well-formed XML) and
checks it against the run's summary.csv: an <svg> root with the four panels, and every series that has
values in summary.csv drawn with exactly those (epoch, value) pairs, in order. Prints what differs and
exits 1; exits 0 when all agree. Used by tests/engine/test_train_run_folder.cpp.

    python3 check_curves_svg.py RUN_FOLDER
"""
import csv
import math
import sys
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"
PANELS = {"loss": ["train_loss", "eval_loss", "eval_loss_ema"],
          "top-1 accuracy (%)": ["eval_top1", "eval_top1_ema"],
          "learning rate": ["lr"], "images/s": ["images_per_s"]}


def main(folder):
    root = ET.parse(folder + "/curves.svg").getroot()
    problems = []
    if root.tag != SVG + "svg":
        problems.append("root element is %s, not svg" % root.tag)
    with open(folder + "/summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    panels = {g.get("data-title"): g for g in root.iter(SVG + "g") if g.get("class") == "panel"}
    if sorted(panels) != sorted(PANELS):
        problems.append("panels %s, expected %s" % (sorted(panels), sorted(PANELS)))
    drawn = 0
    for title, names in PANELS.items():
        series = {g.get("data-name"): g for g in panels.get(title, root).iter(SVG + "g") if g.get("class") == "series"}
        for name in names:
            want = [(float(r["epoch"]), float(r[name])) for r in rows if r.get(name)]
            want = [p for p in want if math.isfinite(p[1])]
            if not want:
                if name in series:
                    problems.append("%s is drawn but has no values" % name)
                continue
            if name not in series:
                problems.append("%s has values but is not drawn in panel %r" % (name, title))
                continue
            got = [tuple(float(x) for x in pair.split(":")) for pair in series[name].get("data-values").split()]
            if got != want:
                problems.append("%s: drawn %s, summary.csv has %s" % (name, got, want))
            if len(series[name].find(SVG + "polyline").get("points").split()) != len(want):
                problems.append("%s: the polyline has another number of points" % name)
            drawn += 1
    if drawn == 0:
        problems.append("no series drawn")
    for p in problems:
        print("curves.svg: " + p)
    print("curves.svg: %d series checked" % drawn)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
