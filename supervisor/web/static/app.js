// worker-supervisor's pages: show each time in the viewer's own zone, UTC staying on hover.
// The pages hold everything without this script (times in UTC); it only changes how times read.
"use strict";
(function () {
  var local = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hour12: false, timeZoneName: "short"
  });
  var times = document.querySelectorAll("time[datetime]");
  for (var i = 0; i < times.length; i++) {
    var time = times[i];
    var when = new Date(time.getAttribute("datetime"));
    if (isNaN(when.getTime())) {
      continue;
    }
    if (time.classList.contains("ago")) {
      // "3s ago", "in 4s": the words stay; the moment in the viewer's zone joins UTC on hover.
      time.title = local.format(when) + " (" + time.title + ")";
    } else {
      time.textContent = local.format(when);
    }
    time.classList.add("local");
  }
  var zone = document.getElementById("zone");
  if (zone) {
    zone.textContent = "times in your zone (" + Intl.DateTimeFormat().resolvedOptions().timeZone + "), UTC on hover";
  }
})();
