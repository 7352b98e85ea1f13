"""The realtime gateway: Socket.IO over Starlette, one node of N behind a load balancer."""
