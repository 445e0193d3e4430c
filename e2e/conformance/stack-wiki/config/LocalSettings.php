<?php $wgSitename = "Team wiki";
