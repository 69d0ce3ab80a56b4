"""A node module that takes 3 seconds to import, standing in for torch and the SD nodes, so tests
can see what the server answers while its nodes are still loading."""
import time

from graph import Float, Node, Out

time.sleep(3)


class Constant(Node):
    value = Float(1.0)
    outputs = (Out("FLOAT", "value"),)
    output_node = True

    def run(self, ctx):
        ctx.show(values=[self.value])
        return self.value
