// Direct-action PVC hand water pump -- parametric model
// fabnode example design "hand-pump", version 1.0.0
// SPDX-License-Identifier: CERN-OHL-S-2.0
//
// Units: millimetres.  z = 0 is the top face of the wellhead clamp, +z is up.
// The pump axis is the z axis; the handle grips lie along x, the spout
// points along +y.
//
// Render the whole pump (pipe strings shortened for viewing):
//     openscad -o pump.stl hand-pump.scad
// Render the full-length reference build (11.6 m outer pipe):
//     openscad -D compact=false -o pump.stl hand-pump.scad
// Render one part alone (its own origin, for checking or CAM):
//     openscad -D 'part="piston"' -o piston.stl hand-pump.scad
//     openscad -D 'part="foot-valve"' -o foot-valve.stl hand-pump.scad
//
// PVC fittings are drawn as plain sleeves with typical sizes; real fittings
// vary between makers, so measure yours (see manufacturing-instructions.md).
// In the assembly the rod end rests on the stop pin along a line, so OpenSCAD
// warns that the exported assembly "may not be a valid 2-manifold"; the single
// parts export clean.

/* [What to show] */
// assembly | piston | foot-valve | valve-body | backing-disc | seat-disc | clamp-block | handle
part = "assembly";
// true: draw the pipe strings 1.6 m long so the assembly fits on screen
compact = true;
// handle position: 0 = fully down (resting on the buffer), 300 = top of a full stroke
stroke = 0;
// draw a see-through ghost of the 110 mm borehole casing (not part of the pump)
show_casing = true;

/* [Pipes] */
outer_od   = 50;     // outer pipe: PVC-U 50 mm PN10
outer_wall = 2.4;    //   -> bore 45.2 mm (the pump cylinder)
rod_od     = 25;     // pump rod: PVC-U 25 mm PN16
rod_wall   = 1.9;    //   -> bore 21.2 mm (the rising main)
outer_len  = 11600;  // outer pipe string, top end to bottom end (reference build)
cyl_len    = 6000;   // bottom length of the outer pipe; the piston runs in its lowest 0.5 m
rod_offset = 90;     // pump rod string length = outer_len - rod_offset
pipe_above_clamp = 150;  // outer pipe top end above the clamp top
stroke_max = 300;    // nominal stroke

/* [Piston] */
body_d     = 38;     // valve body, turned HDPE
body_h     = 43;
body_floor = 6;
body_bore  = 25.2;   // rod socket and poppet chamber
port_d     = 16;     // piston valve port
stop_pin_d = 3;      // poppet stop pin (also carries the rod end)
stop_pin_z = 21;     // stop pin centre above body bottom
rod_pin_d  = 4;      // rod retaining pin
rod_pin_z  = 35;     // rod pin centre above body bottom
pin_len    = 35;
seal_d     = 52;     // cup seal, 3 mm food-grade EPDM, lip bends down in the bore
seal_hole  = 23;
rubber_t   = 3;      // all rubber parts are cut from one 3 mm EPDM sheet
backing_d  = 42;     // backing disc, 10 mm HDPE
backing_t  = 10;
backing_hole = 25.5;
collar_len = 20;     // ring cut from a 25 mm coupling, cemented to the rod
pp_d       = 22;     // piston poppet rubber disc
pp_washer_d = 20;    // M5 x 20 penny washer
pp_washer_t = 1.5;

/* [Foot valve] */
seat_d      = 50;    // seat disc, 10 mm HDPE, push fit in the 50 mm coupling
seat_t      = 10;
seat_port   = 24;
gasket_id   = 44;    // EPDM gasket ring 50/44 x 3 between seat disc and cylinder pipe end
fp_d        = 40;    // foot poppet rubber disc
fp_washer_d = 30;    // M6 x 30 penny washer
fp_washer_t = 1.5;
c50_len     = 70;    // 50 mm coupling (typical)
c50_od      = 58;
pipe_in_coupling = 28.5;  // insertion depth of the cylinder pipe into the foot-valve coupling
stop_bolt_z = 16.5;  // M5 stop bolt centre above the cylinder pipe end
strainer_len = 400;
strainer_bolt_z = 15;     // M5 strainer bolt centre below the strainer top end
slot_w      = 1.2;   // hacksaw slot width
slot_depth  = 12;    // hacksaw cut depth from the outside of the pipe
slot_rows   = 8;
slot_pitch  = 30;
slot_start  = 80;    // first slot row below the strainer top end

/* [Wellhead and handle] */
clamp_len   = 200;   // two HDPE blocks 200 x 40 x 20
clamp_w     = 40;
clamp_t     = 20;
clamp_gap   = 2;     // gap between the blocks when tightened on the pipe
notch_d     = 51;    // hole-saw diameter for the notch (blocks drilled with a 3 mm spacer)
clamp_bolt_x = 70;   // M8 bolts at +/-70 mm
ring_len    = 30;    // shoulder ring cut from a 50 mm coupling
cap50_h     = 40;    // 50 mm end cap (wellhead cap), end wall 5 mm
cap_hole    = 27;    // rod guide hole in the wellhead cap
buffer_d    = 45;    // two EPDM buffer rings
drip_d      = 70;    // EPDM drip disc on top of the buffer rings
f25_od      = 32;    // 25 mm fittings: outside diameter
f25_socket  = 20;    //   socket depth
tee_len     = 70;    //   tee run length
tee_branch  = 35;    //   tee / elbow centre to socket end
riser_len   = 180;
spout_len   = 100;
spout_tail  = 60;
grip_len    = 180;
cap25_len   = 24;    // 25 mm end cap, end wall 4 mm
casing_od   = 110;
casing_cap_od = 118;
casing_cap_h  = 55;

$fa = 6;
$fs = 0.8;

// ---------------------------------------------------------------- derived
outer_id = outer_od - 2 * outer_wall;
rod_id   = rod_od - 2 * rod_wall;
L        = compact ? 1600 : outer_len;       // outer pipe string as drawn
rod_len  = L - rod_offset;                    // pump rod string as drawn
z_pipe_top = pipe_above_clamp;
z_pipe_bot = z_pipe_top - L;                  // bottom end of the cylinder pipe
z_cap_top  = z_pipe_top + 5;                  // wellhead cap end wall is 5 mm
z_tee_bot  = z_cap_top + 3 * rubber_t + stroke;   // spout tee rests on buffer + drip disc
z_rod_top  = z_tee_bot + f25_socket;
z_rod_bot  = z_rod_top - rod_len;
rod_seat_z = stop_pin_z + stop_pin_d / 2;     // rod end sits on the stop pin
z_piston   = z_rod_bot - rod_seat_z;          // bottom of the valve body
z_seat_top = z_pipe_bot - rubber_t;           // top face of the foot-valve seat disc
z_spout_axis  = z_tee_bot + tee_len / 2;
z_handle_axis = z_tee_bot + tee_len + riser_len - 2 * f25_socket + tee_branch;

// ---------------------------------------------------------------- helpers
module tube(od, id, h) {
    difference() {
        cylinder(d = od, h = h);
        translate([0, 0, -1]) cylinder(d = id, h = h + 2);
    }
}

module hex_head(af, h) {            // hexagon across flats af
    cylinder(d = af / cos(30), h = h, $fn = 6);
}

// bolt along +z with the underside of the head at z = 0
module bolt(d, len, af, head_h) {
    translate([0, 0, -head_h]) hex_head(af, head_h);
    cylinder(d = d, h = len, $fn = 16);
}

// cross bolt along x through a part of outside diameter span, centred on the axis
module cross_bolt(d, len, af) {
    rotate([0, 90, 0]) translate([0, 0, -len / 2]) {
        translate([0, 0, -0.8 * d]) hex_head(af, 0.8 * d);
        cylinder(d = d, h = len, $fn = 16);
        translate([0, 0, len - d - 4]) hex_head(af, d);   // nyloc nut
    }
}

// ---------------------------------------------------------------- pipes
module outer_pipe() {
    // the cylinder (bottom length) and the drop pipe above it
    color("LightSteelBlue") {
        translate([0, 0, z_pipe_bot]) tube(outer_od, outer_id, L);
        if (L > cyl_len)                       // joint coupling between the two lengths
            translate([0, 0, z_pipe_bot + cyl_len - c50_len / 2])
                tube(c50_od, outer_od, c50_len);
    }
}

module pump_rod() {
    // hollow 25 mm rod: carries the piston and is the rising main
    color("SkyBlue") {
        translate([0, 0, z_rod_bot]) tube(rod_od, rod_id, rod_len);
        if (rod_len > 6000)
            translate([0, 0, z_rod_bot + 6000 - tee_len / 3])
                tube(f25_od, rod_od, 45);
    }
}

// ---------------------------------------------------------------- piston
// Origin: bottom face of the valve body on the axis.
module valve_body() {
    r  = body_d / 2;
    difference() {
        rotate_extrude($fn = 96) polygon([
            [port_d / 2, 0], [r - 1, 0], [r, 1], [r, body_h - 1.5],
            [r - 1.5, body_h], [body_bore / 2, body_h],
            [body_bore / 2, body_floor], [port_d / 2, body_floor]]);
        // stop-pin hole, drilled 2.8 mm for a 3 mm press-fit pin (along x)
        translate([0, 0, stop_pin_z]) rotate([0, 90, 0])
            cylinder(d = stop_pin_d - 0.2, h = body_d + 2, center = true, $fn = 24);
        // rod-pin hole, drilled 3.8 mm through body and rod after assembly (along y)
        translate([0, 0, rod_pin_z]) rotate([90, 0, 0])
            cylinder(d = rod_pin_d - 0.2, h = body_d + 2, center = true, $fn = 24);
    }
}

module backing_disc() {
    color("Ivory") tube(backing_d, backing_hole, backing_t);
}

module piston_poppet() {
    // EPDM disc on an M5 x 10 A2 bolt, M5 x 20 penny washer on top, M5 nyloc
    color("DimGray") cylinder(d = pp_d, h = rubber_t);
    color("Silver") {
        translate([0, 0, rubber_t]) tube(pp_washer_d, 5.3, pp_washer_t);
        translate([0, 0, rubber_t + pp_washer_t]) difference() {
            hex_head(8, 5);
            translate([0, 0, -1]) cylinder(d = 5, h = 7, $fn = 16);
        }
        bolt(5, 10, 8, 3.5);
    }
}

module piston(poppet_lift = 0) {
    color("Ivory") valve_body();
    translate([0, 0, body_floor + poppet_lift]) piston_poppet();
    color("Silver") {
        translate([0, 0, stop_pin_z]) rotate([0, 90, 0])
            cylinder(d = stop_pin_d, h = pin_len, center = true, $fn = 16);
        translate([0, 0, rod_pin_z]) rotate([90, 0, 0])
            cylinder(d = rod_pin_d, h = pin_len, center = true, $fn = 16);
    }
    // cup seal: drawn flat; in the bore its outer 3.4 mm bends down along the wall
    color("DimGray") translate([0, 0, body_h]) tube(seal_d, seal_hole, rubber_t);
    translate([0, 0, body_h + rubber_t]) backing_disc();
    color("SkyBlue") translate([0, 0, body_h + rubber_t + backing_t])
        tube(f25_od, rod_od, collar_len);
}

// ---------------------------------------------------------------- foot valve
// Origin: bottom end of the cylinder pipe on the axis.
module seat_disc() {
    color("Ivory") difference() {
        cylinder(d = seat_d, h = seat_t);
        translate([0, 0, -1]) cylinder(d = seat_port, h = seat_t + 2);
    }
}

module foot_poppet() {
    // EPDM disc on an M6 x 12 A2 bolt, M6 x 30 penny washer on top, M6 nyloc
    color("DimGray") cylinder(d = fp_d, h = rubber_t);
    color("Silver") {
        translate([0, 0, rubber_t]) tube(fp_washer_d, 6.4, fp_washer_t);
        translate([0, 0, rubber_t + fp_washer_t]) difference() {
            hex_head(10, 6);
            translate([0, 0, -1]) cylinder(d = 6, h = 8, $fn = 16);
        }
        bolt(6, 12, 10, 4);
    }
}

module strainer() {
    // 400 mm of 50 mm pipe with hacksaw slots, end cap cemented at the bottom
    color("LightSteelBlue") difference() {
        translate([0, 0, -strainer_len]) tube(outer_od, outer_id, strainer_len);
        for (i = [0 : slot_rows - 1], k = [0 : 2])
            rotate([0, 0, k * 120 + (i % 2) * 60])
                translate([outer_od / 2 - slot_depth, -40, -slot_start - i * slot_pitch])
                    cube([40, 80, slot_w]);
    }
    color("LightSteelBlue") translate([0, 0, -strainer_len - 5]) difference() {
        cylinder(d = c50_od, h = cap50_h);
        translate([0, 0, 5]) cylinder(d = outer_od + 0.2, h = cap50_h);
    }
}

module foot_valve(with_pipe = true) {
    // short stub of the cylinder pipe above the coupling (part view only)
    if (with_pipe) color("LightSteelBlue") tube(outer_od, outer_id, 60);
    color("LightSteelBlue") translate([0, 0, pipe_in_coupling - c50_len])
        tube(c50_od, outer_od, c50_len);
    color("DimGray") translate([0, 0, -rubber_t]) tube(seat_d, gasket_id, rubber_t);
    translate([0, 0, -rubber_t - seat_t]) seat_disc();
    translate([0, 0, -rubber_t]) foot_poppet();
    color("Silver") {
        translate([0, 0, stop_bolt_z]) cross_bolt(5, 70, 8);
        translate([0, 0, -rubber_t - seat_t - strainer_bolt_z]) cross_bolt(5, 70, 8);
    }
    translate([0, 0, -rubber_t - seat_t]) strainer();
}

// ---------------------------------------------------------------- wellhead
module clamp_block() {
    // one half of the wellhead clamp; mating face at y = 0, block in -y
    color("WhiteSmoke") difference() {
        translate([-clamp_len / 2, -clamp_w, 0]) cube([clamp_len, clamp_w, clamp_t]);
        translate([0, 1.5, -1]) cylinder(d = notch_d, h = clamp_t + 2);
        for (x = [-clamp_bolt_x, clamp_bolt_x])
            translate([x, 1, clamp_t / 2]) rotate([90, 0, 0])
                cylinder(d = 9, h = clamp_w + 2, $fn = 24);
    }
}

module wellhead_clamp() {
    translate([0, -clamp_gap / 2, -clamp_t]) clamp_block();
    translate([0, clamp_gap / 2, -clamp_t]) mirror([0, 1, 0]) clamp_block();
    color("Silver") for (x = [-clamp_bolt_x, clamp_bolt_x])
        translate([x, 0, -clamp_t / 2]) rotate([0, 0, 90]) cross_bolt(8, 100, 13);
}

module wellhead() {
    wellhead_clamp();
    color("LightSteelBlue") {
        tube(c50_od, outer_od, ring_len);                       // shoulder ring
        translate([0, 0, z_cap_top - cap50_h]) difference() {   // wellhead cap
            cylinder(d = c50_od, h = cap50_h);
            translate([0, 0, -1]) cylinder(d = outer_od + 0.2, h = cap50_h - 5 + 1);
            cylinder(d = cap_hole, h = cap50_h + 1);
        }
        translate([0, 0, -clamp_t - casing_cap_h]) difference() {   // casing cap
            cylinder(d = casing_cap_od, h = casing_cap_h);
            translate([0, 0, -1]) cylinder(d = casing_od + 0.4, h = casing_cap_h - 5 + 1);
            cylinder(d = outer_od + 1, h = casing_cap_h + 1);
        }
    }
    if (show_casing)
        %translate([0, 0, -clamp_t - 5 - 1200]) tube(casing_od, casing_od - 7, 1200);
}

// ---------------------------------------------------------------- handle and spout
// Origin: bottom end of the spout tee on the axis.
module tee25() {
    difference() {
        union() {
            cylinder(d = f25_od, h = tee_len);
            translate([0, 0, tee_len / 2]) rotate([-90, 0, 0]) cylinder(d = f25_od, h = tee_branch);
        }
        translate([0, 0, -1]) cylinder(d = rod_id, h = tee_len + 2);
        translate([0, 0, tee_len / 2]) rotate([-90, 0, 0]) cylinder(d = rod_id, h = tee_branch + 1);
    }
}

module handle() {
    color("SkyBlue") {
        // buffer rings and drip disc under the spout tee
        translate([0, 0, -3 * rubber_t]) {
            color("DimGray") tube(buffer_d, rod_od - 3, 2 * rubber_t);
            color("DimGray") translate([0, 0, 2 * rubber_t]) tube(drip_d, rod_od - 3, rubber_t);
        }
        tee25();                                            // spout tee, branch along +y
        translate([0, tee_branch - f25_socket, tee_len / 2]) rotate([-90, 0, 0])
            tube(rod_od, rod_id, spout_len);                // spout stub
        ey = tee_branch + spout_len - 2 * f25_socket + tee_branch;   // elbow corner
        translate([0, ey, tee_len / 2]) {                   // 90 degree elbow, turned down
            sphere(d = f25_od);
            rotate([90, 0, 0]) cylinder(d = f25_od, h = tee_branch);
            translate([0, 0, -tee_branch]) cylinder(d = f25_od, h = tee_branch);
        }
        translate([0, ey, tee_len / 2 - tee_branch + f25_socket - spout_tail])
            tube(rod_od, rod_id, spout_tail);               // spout tail, outlet at its lower end
        translate([0, 0, tee_len - f25_socket]) tube(rod_od, rod_id, riser_len);
        hz = tee_len + riser_len - 2 * f25_socket + tee_branch;      // handle axis
        translate([0, 0, hz]) {
            rotate([0, 90, 0]) translate([0, 0, -tee_len / 2]) tube(f25_od, rod_id, tee_len);
            translate([0, 0, -tee_branch]) cylinder(d = f25_od, h = tee_branch);
            for (s = [-1, 1]) {
                rotate([0, s * 90, 0]) {
                    translate([0, 0, tee_len / 2 - f25_socket]) tube(rod_od, rod_id, grip_len);
                    translate([0, 0, tee_len / 2 - f25_socket + grip_len + 4 - cap25_len])
                        cylinder(d = f25_od, h = cap25_len);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- assembly
module assembly() {
    outer_pipe();
    wellhead();
    pump_rod();
    translate([0, 0, z_piston]) piston();
    translate([0, 0, z_pipe_bot]) foot_valve(with_pipe = false);
    translate([0, 0, z_tee_bot]) handle();

    echo(str("outer pipe string: ", L, " mm; pump rod string: ", rod_len, " mm"));
    echo(str("piston bottom above foot-valve seat: ", z_piston - z_seat_top,
             " mm; inside the cylinder pipe end: ", z_piston - z_pipe_bot, " mm"));
    echo(str("spout outlet height above clamp top: ",
             z_spout_axis - tee_branch + f25_socket - spout_tail, " mm"));
    echo(str("handle axis above clamp top: ", z_handle_axis, " mm"));
    echo(str("overall height: ", z_handle_axis + f25_od / 2
             - (z_seat_top - seat_t - strainer_len - 5), " mm"));
}

if (part == "assembly")          assembly();
else if (part == "piston")       piston();
else if (part == "foot-valve")   foot_valve();
else if (part == "valve-body")   color("Ivory") valve_body();
else if (part == "backing-disc") backing_disc();
else if (part == "seat-disc")    seat_disc();
else if (part == "clamp-block")  clamp_block();
else if (part == "handle")       handle();
else echo(str("unknown part: ", part));
